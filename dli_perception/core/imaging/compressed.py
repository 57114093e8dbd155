"""``sensor_msgs/CompressedImage`` to and from numpy: every format cv_bridge writes, and compressedDepth PNG.

Decoding keeps the stored layout (mono and 16-bit PNGs stay so) and refuses a header that declares
more than :data:`~dli_perception.core.imaging.formats.MAX_DECODED_PIXELS` before decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from dli_perception.core.imaging.conversion import _convert, _cv2
from dli_perception.core.imaging.encoding_table import PASSTHROUGH, _known, generic_encoding
from dli_perception.core.imaging.formats import CODECS, MAX_DECODED_PIXELS, declared_size, is_gray_sun_raster
from dli_perception.core.imaging.messages import (
    _assign_header,
    _byte_buffer,
    _flat_bytes,
    _get_field,
    _new_message,
    _payload,
)
from dli_perception.core.imaging.raw import _checked_array
from dli_perception.errors import ImageConversionError


@dataclass(frozen=True)
class _FormatSpec:
    """What a CompressedImage ``format`` string says."""

    codec: str  # "jpeg", "png", ... or "" when not stated
    source: str | None  # encoding of the image before compression ("rgb8" in "rgb8; jpeg compressed bgr8")
    target: str | None  # encoding of the compressed pixels ("bgr8" there)
    depth: bool  # compressed_depth_image_transport ("16UC1; compressedDepth png")


_COMPRESSED_RE = re.compile(r"(?P<codec>\w+)\s+compressed(?:\s+(?P<target>\S+))?", re.IGNORECASE)
_DEPTH_RE = re.compile(r"compresseddepth(?:\s+(?P<codec>\w+))?", re.IGNORECASE)
_DEPTH_HEADER_BYTES = 12  # compressed_depth_image_transport ConfigHeader: int32 format, float32[2]


def _parse_format(fmt: str) -> _FormatSpec:
    head, sep, tail = fmt.partition(";")
    if not sep:
        return _FormatSpec(head.strip().lower(), None, None, False)
    source = head.strip() or None
    depth = _DEPTH_RE.search(tail)
    if depth:
        return _FormatSpec((depth.group("codec") or "png").lower(), source, None, True)
    match = _COMPRESSED_RE.search(tail)
    if match:
        return _FormatSpec(match.group("codec").lower(), source, match.group("target"), False)
    return _FormatSpec(tail.strip().lower(), source, None, False)


_DECODED_COLOR = {1: "mono", 3: "bgr", 4: "bgra"}


def _decoded_encoding(img: np.ndarray, spec: _FormatSpec) -> str:
    """Encoding of an imdecode result: the stated target, a stated generic source, else by layout.

    OpenCV decodes colour as bgr/bgra, so a colour source ("rgb8; jpeg compressed bgr8") is
    not the layout of the decoded pixels; one channel is mono8/mono16.
    """
    channels = 1 if img.ndim == 2 else img.shape[2]
    generic = generic_encoding(img.dtype, channels)
    target, source = _known(spec.target), _known(spec.source)
    if target is not None and target.generic == generic:
        return target.name
    if source is not None and not source.is_color and source.generic == generic:
        return source.name
    prefix = _DECODED_COLOR.get(channels)
    bits = img.dtype.itemsize * 8
    if prefix is not None and img.dtype.kind == "u" and bits in (8, 16):
        return f"{prefix}{bits}"
    return generic


def _imdecode(buf: np.ndarray) -> np.ndarray:
    size = declared_size(buf)
    if size is not None and size[0] * size[1] > MAX_DECODED_PIXELS:
        raise ImageConversionError(
            f"compressed image declares {size[0]}x{size[1]} pixels, more than MAX_DECODED_PIXELS="
            f"{MAX_DECODED_PIXELS}; refused before decoding (a corrupt or hostile header)"
        )
    cv2 = _cv2()
    gray_raster = is_gray_sun_raster(buf)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR if gray_raster else cv2.IMREAD_UNCHANGED)
        if gray_raster and img is not None:
            img = np.ascontiguousarray(img[:, :, 0])
    except cv2.error as exc:
        raise ImageConversionError(f"compressed image data cannot be decoded: {exc}") from exc
    if img is None:
        raise ImageConversionError(
            f"compressed image data ({buf.size} bytes) is corrupt or not in a format OpenCV can decode"
        )
    return img


def _decode_compressed_depth(buf: np.ndarray, spec: _FormatSpec) -> tuple[np.ndarray, str]:
    """compressed_depth_image_transport payload: 12-byte config, then PNG of raw or inverse depth."""
    source = _known(spec.source)
    if spec.codec != "png":
        raise ImageConversionError(f"compressedDepth {spec.codec} is not supported; only png is")
    if source is None or source.channels != 1 or source.bit_depth not in (16, 32):
        raise ImageConversionError(f"compressedDepth needs a 16-bit or 32FC1 source encoding, got {spec.source!r}")
    if buf.size <= _DEPTH_HEADER_BYTES:
        raise ImageConversionError(f"compressedDepth data is only {buf.size} bytes: the message is truncated")
    quant_a, quant_b = np.frombuffer(buf[4:_DEPTH_HEADER_BYTES].tobytes(), dtype="<f4")
    raw = _imdecode(buf[_DEPTH_HEADER_BYTES:])
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise ImageConversionError(f"compressedDepth PNG must be 16-bit mono, got {raw.dtype} {raw.shape}")
    if source.bit_depth == 16:
        return raw.view(source.dtype), source.name
    depth = np.full(raw.shape, np.nan, dtype=np.float32)
    valid = raw != 0
    depth[valid] = quant_a / (raw[valid].astype(np.float32) - quant_b)
    return depth.astype(source.dtype, copy=False), source.name


def _compressed_array(msg: Any) -> tuple[np.ndarray, str]:
    fmt = _get_field(msg, "format", "CompressedImage")
    if not isinstance(fmt, str):
        raise ImageConversionError(f"compressed image format must be a string, got {type(fmt).__name__}")
    buf = _byte_buffer(_get_field(msg, "data", "CompressedImage"))
    if buf.size == 0:
        raise ImageConversionError("compressed image has no data")
    spec = _parse_format(fmt)
    if spec.depth:
        return _decode_compressed_depth(buf, spec)
    img = _imdecode(buf)
    return img, _decoded_encoding(img, spec)


def compressed_imgmsg_to_cv2(cmprs_img_msg: Any, desired_encoding: str = PASSTHROUGH) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage-like message (JPEG, PNG, compressedDepth png ...).

    Decodes with IMREAD_UNCHANGED, so mono and 16-bit PNGs keep their layout; ``format`` tells
    the stored encoding (colour decodes as bgr8/bgra8). Raises ImageConversionError for corrupt
    data or impossible conversions.
    """
    img, encoding = _compressed_array(cmprs_img_msg)
    return _convert(img, encoding, desired_encoding)


def _encode(cvim: Any, dst_format: str, quality: int, png_compression: int | None) -> tuple[bytes | np.ndarray, str]:
    arr, generic = _checked_array(cvim)
    codec = CODECS.get(str(dst_format).lower().lstrip("."))
    if codec is None:
        raise ImageConversionError(f"dst_format must be one of {', '.join(CODECS)}, got {dst_format!r}")
    fmt = codec.name
    if generic not in codec.layouts:
        raise ImageConversionError(f"{fmt} can store {', '.join(sorted(codec.layouts))} images, not {generic}")
    if not 0 <= int(quality) <= 100:
        raise ImageConversionError(f"JPEG quality must be in [0, 100], got {quality}")
    cv2 = _cv2()
    params = []
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt == "png" and png_compression is not None:
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    try:
        ok, encoded = cv2.imencode(codec.extension, arr, params)
    except cv2.error as exc:
        raise ImageConversionError(f"OpenCV could not encode a {generic} image as {fmt}: {exc}") from exc
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {generic} image as {fmt}")
    return encoded, fmt


def cv2_to_compressed_imgmsg(
    cvim: np.ndarray,
    dst_format: str = "jpg",
    *,
    quality: int = 95,
    png_compression: int | None = None,
    header: Any = None,
    msg_type: Any = None,
) -> Any:
    """A sensor_msgs/CompressedImage of ``cvim`` in any format cv_bridge accepts (see formats.CODECS).

    ``jpg``/``jpeg``/``jpe``, ``png``, ``bmp``/``dib``, ``ras``/``sr``, ``tif``/``tiff``; like cv_bridge,
    3/4-channel input is taken as bgr8/bgra8. ``format`` is written in its canonical spelling ("jpeg",
    "png", "bmp", "ras", "tiff"); a layout the format would silently change is refused. ``quality``
    (0-100) applies to JPEG, ``png_compression`` (0-9) to PNG. Builds ``msg_type()`` when given, else
    sensor_msgs when importable, else :class:`CompressedImageMsg`.
    """
    encoded, fmt = _encode(cvim, dst_format, quality, png_compression)
    msg = _new_message(msg_type, "CompressedImage")
    try:
        _assign_header(msg, header)
        msg.format = fmt
        msg.data = _payload(getattr(msg, "data", None), _flat_bytes(encoded))
    except ImageConversionError:
        raise
    except Exception as exc:  # a msg_type that rejects the fields
        raise ImageConversionError(f"{type(msg).__name__} cannot hold a compressed image: {exc}") from exc
    return msg
