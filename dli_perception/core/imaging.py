"""sensor_msgs Image and CompressedImage to and from numpy, with cv_bridge's API and without ROS.

The four cv_bridge functions (:func:`imgmsg_to_cv2`, :func:`cv2_to_imgmsg`,
:func:`compressed_imgmsg_to_cv2`, :func:`cv2_to_compressed_imgmsg`) and the
:class:`CvBridge` class around them accept any object with the message fields:
rclpy messages (``data`` is an ``array.array``), rosbags messages (``data`` is a
uint8 numpy array) and plain namespaces.

Reading is zero-copy when the layout allows it (no row padding, host byte
order, aligned buffer): a ``passthrough`` result then shares memory with
``msg.data`` and is read-only when that buffer is (``bytes``, rosbags). Copy it
before drawing on it.

``desired_encoding`` conversions follow cv_bridge: colour encodings convert
among themselves through ``cv2.cvtColor`` (yuv422 and bayer only to
mono/rgb/bgr, plus rgba/bgra for yuv), 8 <-> 16 bit depth changes are scaled
(x257 and /257), and generic OpenCV types (``"8UC3"``) only change depth, never
colour. When the real cv_bridge is importable its C++ converter
(``cv_bridge.boost.cv_bridge_boost.cvtColor2``) does the colour conversions;
``DLI_PERCEPTION_FORCE_BUILTIN_BRIDGE=1`` (or :data:`force_builtin_bridge`)
selects the built-in table. Packing and unpacking messages is always done here,
because cv_bridge's Python side calls ``ndarray.newbyteorder`` (gone in NumPy 2)
on big-endian data and decodes every compressed image as bgr8.

Every failure raises :class:`~dli_perception.errors.ImageConversionError`, also
importable from here as ``CvBridgeError``.
"""

from __future__ import annotations

import array
import functools
import importlib
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from dli_perception.core.cvtypes import cv_type_layout, generic_name, parse_generic
from dli_perception.core.imagecodecs import CODECS, MAX_DECODED_PIXELS, declared_size, is_gray_sun_raster
from dli_perception.errors import CvBridgeError, ImageConversionError

__all__ = [
    "ENCODINGS",
    "FORCE_BUILTIN_ENV",
    "PASSTHROUGH",
    "CompressedImageMsg",
    "CvBridge",
    "CvBridgeError",
    "EncodingInfo",
    "HeaderMsg",
    "ImageConversionError",
    "MAX_DECODED_PIXELS",
    "ImageMsg",
    "TimeMsg",
    "bridge_backend",
    "compressed_imgmsg_to_cv2",
    "convert",
    "cv2_to_compressed_imgmsg",
    "cv2_to_imgmsg",
    "encoding_info",
    "encoding_to_dtype_with_channels",
    "force_builtin_bridge",
    "generic_encoding",
    "imgmsg_to_cv2",
    "stamp_ns",
    "to_rgb8",
    "to_rosbags_compressed_image",
    "to_rosbags_image",
]

logger = logging.getLogger(__name__)

PASSTHROUGH = "passthrough"
FORCE_BUILTIN_ENV = "DLI_PERCEPTION_FORCE_BUILTIN_BRIDGE"

force_builtin_bridge: bool = False
"""True ignores an installed cv_bridge, like ``DLI_PERCEPTION_FORCE_BUILTIN_BRIDGE=1``."""

_HOST_BIGENDIAN = sys.byteorder == "big"
_MAX_UINT32 = 2**32 - 1
_PASSTHROUGH_NAMES = frozenset({PASSTHROUGH, ""})


# --------------------------------------------------------------------------- encoding tables


@dataclass(frozen=True)
class EncodingInfo:
    """What one ``sensor_msgs/Image`` encoding stores per pixel.

    ``family`` is the colour layout (``gray``, ``rgb``, ``bgr``, ``rgba``, ``bgra``, ``uyvy``,
    ``yuyv``, ``bayer_rggb`` ...) or None for OpenCV generic types such as ``8UC3``, which
    carry no colour meaning.
    """

    name: str
    dtype: np.dtype
    channels: int
    family: str | None = None

    @property
    def bit_depth(self) -> int:
        """Bits per channel value (8, 16, 32 or 64)."""
        return self.dtype.itemsize * 8

    @property
    def generic(self) -> str:
        """The OpenCV type name with the same memory layout, e.g. ``"8UC3"`` for rgb8."""
        return _GENERIC_BY_DTYPE[(self.dtype.kind, self.dtype.itemsize)] + f"C{self.channels}"

    @property
    def is_color(self) -> bool:
        """True for colour encodings (mono, rgb, yuv, bayer ...), False for generic types."""
        return self.family is not None


_DEPTH_DTYPES: Mapping[str, np.dtype] = MappingProxyType(
    {
        "8U": np.dtype(np.uint8),
        "8S": np.dtype(np.int8),
        "16U": np.dtype(np.uint16),
        "16S": np.dtype(np.int16),
        "32S": np.dtype(np.int32),
        "32F": np.dtype(np.float32),
        "64F": np.dtype(np.float64),
    }
)
_GENERIC_BY_DTYPE: Mapping[tuple[str, int], str] = MappingProxyType(
    {(dt.kind, dt.itemsize): depth for depth, dt in _DEPTH_DTYPES.items()}
)

# name, depth, channels, colour family. yuv422 is UYVY byte order, yuv422_yuy2 is YUYV.
_COLOR_ENCODINGS: tuple[tuple[str, str, int, str], ...] = (
    ("mono8", "8U", 1, "gray"),
    ("mono16", "16U", 1, "gray"),
    ("rgb8", "8U", 3, "rgb"),
    ("rgb16", "16U", 3, "rgb"),
    ("bgr8", "8U", 3, "bgr"),
    ("bgr16", "16U", 3, "bgr"),
    ("rgba8", "8U", 4, "rgba"),
    ("rgba16", "16U", 4, "rgba"),
    ("bgra8", "8U", 4, "bgra"),
    ("bgra16", "16U", 4, "bgra"),
    ("yuv422", "8U", 2, "uyvy"),
    ("uyvy", "8U", 2, "uyvy"),
    ("yuv422_yuy2", "8U", 2, "yuyv"),
    ("yuyv", "8U", 2, "yuyv"),
    ("bayer_rggb8", "8U", 1, "bayer_rggb"),
    ("bayer_bggr8", "8U", 1, "bayer_bggr"),
    ("bayer_gbrg8", "8U", 1, "bayer_gbrg"),
    ("bayer_grbg8", "8U", 1, "bayer_grbg"),
    ("bayer_rggb16", "16U", 1, "bayer_rggb"),
    ("bayer_bggr16", "16U", 1, "bayer_bggr"),
    ("bayer_gbrg16", "16U", 1, "bayer_gbrg"),
    ("bayer_grbg16", "16U", 1, "bayer_grbg"),
)


def _build_encodings() -> dict[str, EncodingInfo]:
    table = {
        name: EncodingInfo(name, _DEPTH_DTYPES[depth], channels, family)
        for name, depth, channels, family in _COLOR_ENCODINGS
    }
    for depth, dtype in _DEPTH_DTYPES.items():
        for channels in (1, 2, 3, 4):
            name = f"{depth}C{channels}"
            table[name] = EncodingInfo(name, dtype, channels, None)
    return table


ENCODINGS: Mapping[str, EncodingInfo] = MappingProxyType(_build_encodings())
"""Every supported encoding name -> :class:`EncodingInfo`."""

_ENCODINGS_FOLDED: Mapping[str, EncodingInfo] = MappingProxyType({k.lower(): v for k, v in ENCODINGS.items()})

# Names older cv_bridge releases may not know, given to its converter in their canonical spelling.
_CV_BRIDGE_SPELLING: Mapping[str, str] = MappingProxyType({"uyvy": "yuv422", "yuyv": "yuv422_yuy2"})

# Colour conversions: (source family, target family) -> cv2.COLOR_* names applied in turn.
# _DEPTH marks a bit-depth change (cv_bridge's SAME_FORMAT step).
_DEPTH = "depth"
_PLAIN_CV_NAMES = {"gray": "GRAY", "rgb": "RGB", "bgr": "BGR", "rgba": "RGBA", "bgra": "BGRA"}
_YUV_CV_SUFFIXES = {"uyvy": "UYVY", "yuyv": "YUY2"}
# OpenCV names Bayer patterns by the 2x2 block starting at pixel (1, 1): ROS rggb is OpenCV BayerBG.
_BAYER_CV_NAMES = {
    "bayer_rggb": "BayerBG",
    "bayer_bggr": "BayerRG",
    "bayer_gbrg": "BayerGR",
    "bayer_grbg": "BayerGB",
}
_BAYER_TARGETS = ("gray", "rgb", "bgr")


def _build_conversions() -> dict[tuple[str, str], tuple[str, ...]]:
    families = [*_PLAIN_CV_NAMES, *_YUV_CV_SUFFIXES, *_BAYER_CV_NAMES]
    table: dict[tuple[str, str], tuple[str, ...]] = {(f, f): (_DEPTH,) for f in families}
    for src, src_cv in _PLAIN_CV_NAMES.items():
        for dst, dst_cv in _PLAIN_CV_NAMES.items():
            if src != dst:
                table[(src, dst)] = (f"COLOR_{src_cv}2{dst_cv}",)
    for src, suffix in _YUV_CV_SUFFIXES.items():
        for dst, dst_cv in _PLAIN_CV_NAMES.items():
            table[(src, dst)] = (f"COLOR_YUV2{dst_cv}_{suffix}",)
    for src, bayer_cv in _BAYER_CV_NAMES.items():
        for dst in _BAYER_TARGETS:
            table[(src, dst)] = (f"COLOR_{bayer_cv}2{_PLAIN_CV_NAMES[dst]}",)
    return table


_CONVERSIONS: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType(_build_conversions())

# Scale factors cv_bridge applies when only the bit depth changes between 8 and 16 bits.
_DEPTH_SCALES: Mapping[tuple[int, int], float] = MappingProxyType(
    {(8, 16): 65535.0 / 255.0, (16, 8): 255.0 / 65535.0}
)

# How to_rgb8 reads generic types: OpenCV's channel order (bgr) and mono for one channel.
_RGB8_SOURCE_GUESS: Mapping[str, str] = MappingProxyType(
    {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8", "16UC1": "mono16", "16UC3": "bgr16", "16UC4": "bgra16"}
)


@functools.lru_cache(maxsize=64)
def _wide_generic(name: str) -> EncodingInfo | None:
    """EncodingInfo of a generic name with more channels than :data:`ENCODINGS` lists (``"8UC5"``)."""
    parsed = parse_generic(name)
    return None if parsed is None else EncodingInfo(name, parsed[0], parsed[1], None)


def encoding_info(encoding: str) -> EncodingInfo:
    """Look up an encoding name (exact, else case-insensitive); generic names take 1 to 512 channels.

    Raises ImageConversionError for unknown names or non-strings.
    """
    if not isinstance(encoding, str):
        raise ImageConversionError(f"image encoding must be a string, got {type(encoding).__name__}")
    info = ENCODINGS.get(encoding) or _ENCODINGS_FOLDED.get(encoding.strip().lower())
    if info is None:
        info = _wide_generic(encoding.strip().upper())
    if info is None:
        raise ImageConversionError(
            f"unknown image encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}, and "
            "generic types with up to 512 channels (8UC5 ...)"
        )
    return info


def encoding_to_dtype_with_channels(encoding: str) -> tuple[np.dtype, int]:
    """cv_bridge's lookup: encoding -> (numpy dtype, number of channels)."""
    info = encoding_info(encoding)
    return info.dtype, info.channels


def generic_encoding(dtype: Any, channels: int) -> str:
    """OpenCV type name (``"8UC3"``, ``"32FC1"``, ``"8UC5"`` ...) for a numpy dtype and channel count.

    Raises ImageConversionError for dtypes OpenCV images cannot hold (bool, int64, float16 ...)
    or more than 512 channels.
    """
    return generic_name(dtype, channels)


# --------------------------------------------------------------------------- message classes


@dataclass
class TimeMsg:
    """builtin_interfaces/Time stand-in: seconds and nanoseconds."""

    sec: int = 0
    nanosec: int = 0


@dataclass
class HeaderMsg:
    """std_msgs/Header stand-in."""

    stamp: TimeMsg = field(default_factory=TimeMsg)
    frame_id: str = ""


@dataclass
class ImageMsg:
    """sensor_msgs/Image stand-in, built when sensor_msgs is not importable."""

    header: HeaderMsg = field(default_factory=HeaderMsg)
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: bytes = b""


@dataclass
class CompressedImageMsg:
    """sensor_msgs/CompressedImage stand-in, built when sensor_msgs is not importable."""

    header: HeaderMsg = field(default_factory=HeaderMsg)
    format: str = ""
    data: bytes = b""


_FALLBACK_CLASSES = {"Image": ImageMsg, "CompressedImage": CompressedImageMsg}


@functools.cache
def _message_class(name: str) -> type:
    """``sensor_msgs.msg.<name>`` when importable (never imports rclpy), else the stand-in dataclass."""
    try:
        return getattr(importlib.import_module("sensor_msgs.msg"), name)
    except (ImportError, AttributeError) as exc:  # no ROS here, or a broken install
        logger.debug("sensor_msgs.msg.%s not importable (%s); using %s", name, exc, _FALLBACK_CLASSES[name])
        return _FALLBACK_CLASSES[name]


# --------------------------------------------------------------------------- backend selection

_UNSET = object()
_real_cvtcolor_cache: Any = _UNSET


def _real_cvtcolor() -> Any:
    """cv_bridge's ``cvtColor2`` when cv_bridge is importable and not disabled, else None."""
    global _real_cvtcolor_cache
    if force_builtin_bridge or os.environ.get(FORCE_BUILTIN_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None
    if _real_cvtcolor_cache is _UNSET:
        try:
            from cv_bridge.boost.cv_bridge_boost import cvtColor2  # type: ignore[import-not-found]
        except (ImportError, AttributeError, OSError) as exc:  # absent, or built for another numpy/python
            logger.debug("cv_bridge not usable (%s); using the built-in converter", exc)
            _real_cvtcolor_cache = None
        else:
            logger.debug("using cv_bridge's cvtColor2 for colour conversions")
            _real_cvtcolor_cache = cvtColor2
    return _real_cvtcolor_cache


def bridge_backend() -> str:
    """``"cv_bridge"`` when the real cv_bridge does colour conversions, else ``"builtin"``."""
    return "builtin" if _real_cvtcolor() is None else "cv_bridge"


def _cv2() -> Any:
    import cv2  # lazy: nodes import this module at start-up

    return cv2


# --------------------------------------------------------------------------- field validation


def _get_field(msg: Any, name: str, kind: str) -> Any:
    try:
        return getattr(msg, name)
    except AttributeError:
        hint = ""
        if kind == "Image" and hasattr(msg, "format"):
            hint = " (it looks like a CompressedImage: use compressed_imgmsg_to_cv2)"
        elif kind == "CompressedImage" and hasattr(msg, "encoding"):
            hint = " (it looks like an Image: use imgmsg_to_cv2)"
        raise ImageConversionError(
            f"{type(msg).__name__} has no '{name}' field: expected a sensor_msgs/{kind} (rclpy, rosbags "
            f"or any object with its fields){hint}"
        ) from None


def _size_field(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ImageConversionError(f"image {name} must be an integer, got {value!r}")
    size = int(value)
    if not 0 <= size <= _MAX_UINT32:
        raise ImageConversionError(f"image {name}={size} is outside [0, 2**32 - 1]: the message is corrupt")
    return size


def _bigendian_field(value: Any) -> bool:
    if isinstance(value, (bool, int, np.bool_, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise ImageConversionError(f"image is_bigendian must be 0 or 1, got {value!r}")


def _byte_buffer(data: Any) -> np.ndarray:
    """``msg.data`` as a 1-D uint8 array sharing its memory (copied only if it is not contiguous)."""
    if isinstance(data, np.ndarray):
        if data.dtype.itemsize != 1 or data.dtype.kind not in "uib":
            raise ImageConversionError(f"image data must hold bytes, got a numpy array of {data.dtype}")
        return np.ascontiguousarray(data.reshape(-1)).view(np.uint8)
    if isinstance(data, (str, list, tuple)) or data is None:
        raise ImageConversionError(
            f"image data must be bytes-like (bytes, bytearray, array.array('B'), memoryview or a uint8 "
            f"numpy array), got {type(data).__name__}; wrap a list of ints with bytes(...)"
        )
    try:
        view = memoryview(data)
    except TypeError:
        raise ImageConversionError(
            f"image data must be bytes-like, got {type(data).__name__} which has no buffer"
        ) from None
    if view.itemsize != 1 or not view.c_contiguous:
        raise ImageConversionError(
            f"image data must be a contiguous buffer of bytes, got items of {view.itemsize} bytes "
            f"(format {view.format!r}, contiguous={view.c_contiguous})"
        )
    return np.frombuffer(view, dtype=np.uint8)


def _image_array(msg: Any) -> tuple[np.ndarray, EncodingInfo]:
    """Validate an Image-like message and view its pixels in host byte order.

    Zero-copy when rows are unpadded, the byte order is the host's and the buffer is aligned.
    """
    height = _size_field(_get_field(msg, "height", "Image"), "height")
    width = _size_field(_get_field(msg, "width", "Image"), "width")
    step = _size_field(_get_field(msg, "step", "Image"), "step")
    info = encoding_info(_get_field(msg, "encoding", "Image"))
    bigendian = _bigendian_field(_get_field(msg, "is_bigendian", "Image"))
    buf = _byte_buffer(_get_field(msg, "data", "Image"))
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image ({width}x{height}): width and height must be > 0")
    if info.family in _YUV_CV_SUFFIXES and width % 2:
        raise ImageConversionError(
            f"{info.name} packs two pixels in 4 bytes, so width must be even, got {width}"
        )
    itemsize = info.dtype.itemsize
    row_bytes = width * info.channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step={step} is shorter than one row of {width} {info.name} pixels ({row_bytes} bytes)"
        )
    if buf.size < step * height:
        raise ImageConversionError(
            f"image data has {buf.size} bytes but step*height = {step}*{height} = {step * height}: "
            "the message is truncated"
        )
    if info.channels == 1:
        shape: tuple[int, ...] = (height, width)
        strides: tuple[int, ...] = (step, itemsize)
    else:
        shape = (height, width, info.channels)
        strides = (step, info.channels * itemsize, itemsize)
    dtype = info.dtype.newbyteorder(">" if bigendian else "<")
    arr = np.ndarray(shape, dtype=dtype, buffer=buf, strides=strides)
    if not arr.dtype.isnative:
        arr = arr.byteswap().view(arr.dtype.newbyteorder())
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = arr.copy()
    return arr, info


# --------------------------------------------------------------------------- conversions


def _conversion_steps(src: EncodingInfo, dst: EncodingInfo) -> tuple[str, ...]:
    """cv_bridge's rules for which conversions make sense, as cv2.COLOR_* names and _DEPTH steps."""
    if not src.is_color:
        if dst.is_color:
            raise ImageConversionError(
                f"[{src.name}] is not a colour encoding but [{dst.name}] is, so the conversion has no "
                f"meaning; ask for 'passthrough' or a {src.generic[:-1]}N type"
            )
        if src.channels != dst.channels:
            raise ImageConversionError(
                f"[{src.name}] and [{dst.name}] do not have the same number of channels"
            )
        return (_DEPTH,)
    if not dst.is_color:
        if src.channels != dst.channels:
            raise ImageConversionError(
                f"[{src.name}] is a colour encoding and [{dst.name}] is not, so they must have the same "
                f"number of channels ({src.channels} vs {dst.channels})"
            )
        return (_DEPTH,)
    steps = _CONVERSIONS.get((src.family, dst.family))
    if steps is None:
        targets = sorted(n for n, i in ENCODINGS.items() if (src.family, i.family) in _CONVERSIONS)
        raise ImageConversionError(
            f"cannot convert [{src.name}] to [{dst.name}]; possible targets: {', '.join(targets)}"
        )
    if src.bit_depth != dst.bit_depth and src.family != dst.family:
        steps = (*steps, _DEPTH)
    return steps


def _change_depth(img: np.ndarray, src_bits: int, dst: EncodingInfo) -> np.ndarray:
    """cv::Mat::convertTo to ``dst.dtype``: x257 / 257 between 8 and 16 bits, round and saturate."""
    scale = _DEPTH_SCALES.get((src_bits, dst.bit_depth), 1.0)
    if img.dtype == dst.dtype and scale == 1.0:
        return img.copy()
    if img.dtype == np.uint8 and dst.dtype == np.uint16:  # exact integer paths, 10x faster
        return img.astype(np.uint16) * np.uint16(257)
    if img.dtype == np.uint16 and dst.dtype == np.uint8:  # x/257 never ends in .5, so this is rint
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    values = img.astype(np.float64)
    if scale != 1.0:
        values *= scale
    if dst.dtype.kind == "f":
        return values.astype(dst.dtype)
    limits = np.iinfo(dst.dtype)
    np.rint(values, out=values)
    np.nan_to_num(values, copy=False, nan=0.0)
    np.clip(values, limits.min, limits.max, out=values)
    return values.astype(dst.dtype)


def _builtin_convert(img: np.ndarray, src: EncodingInfo, dst: EncodingInfo) -> np.ndarray:
    steps = _conversion_steps(src, dst)
    cv2 = _cv2()
    out = img
    try:
        for step in steps:
            if step == _DEPTH:
                out = _change_depth(out, src.bit_depth, dst)
            else:
                out = cv2.cvtColor(out, getattr(cv2, step))
    except cv2.error as exc:
        raise ImageConversionError(f"OpenCV could not convert [{src.name}] to [{dst.name}]: {exc}") from exc
    return out


def _convert(img: np.ndarray, src_encoding: str, desired_encoding: str | None) -> np.ndarray:
    """``img`` (stored as ``src_encoding``) in ``desired_encoding``; passthrough returns it as is."""
    if desired_encoding is None or desired_encoding in _PASSTHROUGH_NAMES:
        return img
    src = encoding_info(src_encoding)
    dst = encoding_info(desired_encoding)
    real = _real_cvtcolor()
    if real is None:
        return _builtin_convert(img, src, dst)
    try:
        out = real(
            img, _CV_BRIDGE_SPELLING.get(src.name, src.name), _CV_BRIDGE_SPELLING.get(dst.name, dst.name)
        )
    except Exception as exc:  # cv_bridge raises RuntimeError (boost) or its CvBridgeError
        raise ImageConversionError(
            f"cv_bridge could not convert [{src.name}] to [{dst.name}]: {exc}"
        ) from exc
    return np.asarray(out)


def convert(img: np.ndarray, src_encoding: str, desired_encoding: str) -> np.ndarray:
    """Pixels ``img`` stored as ``src_encoding``, converted by the rules of :func:`imgmsg_to_cv2`."""
    return _convert(img, src_encoding, desired_encoding)


def imgmsg_to_cv2(img_msg: Any, desired_encoding: str = PASSTHROUGH) -> np.ndarray:
    """Pixels of a sensor_msgs/Image-like message as ``HxW`` or ``HxWxC`` array in host byte order.

    ``passthrough`` keeps the message's layout (yuv422 as ``HxWx2``, bayer as ``HxW``) and shares
    memory with ``msg.data`` when it can. Raises ImageConversionError for bad messages or
    conversions cv_bridge would refuse.
    """
    arr, info = _image_array(img_msg)
    return _convert(arr, info.name, desired_encoding)


def _checked_array(cvim: Any, *, keep_byte_order: bool = False) -> tuple[np.ndarray, str]:
    """The ndarray (in host byte order unless ``keep_byte_order``) and its generic type name.

    Raises ImageConversionError for anything an image message cannot hold.
    """
    if not isinstance(cvim, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(cvim).__name__}")
    if cvim.ndim not in (2, 3):
        raise ImageConversionError(f"expected an HxW or HxWxC array, got shape {cvim.shape}")
    channels = 1 if cvim.ndim == 2 else cvim.shape[2]
    generic = generic_encoding(cvim.dtype, channels)
    if cvim.shape[0] == 0 or cvim.shape[1] == 0:
        raise ImageConversionError(f"empty image of shape {cvim.shape}")
    if cvim.shape[0] > _MAX_UINT32 or cvim.shape[1] > _MAX_UINT32:
        raise ImageConversionError(f"image of shape {cvim.shape} is too large for a ROS message")
    if not keep_byte_order and not cvim.dtype.isnative:
        cvim = cvim.astype(cvim.dtype.newbyteorder("="))
    return cvim, generic


def _is_bigendian(arr: np.ndarray) -> bool:
    """Byte order of an array's items: explicit '>'/'<', else the host's (native and 1-byte items)."""
    order = arr.dtype.byteorder
    return order == ">" if order in "<>" else _HOST_BIGENDIAN


def _prepare_image(cvim: Any, encoding: str | None) -> tuple[np.ndarray, str, int, bool]:
    """Array (C-contiguous, in its own byte order), encoding name, step and is_bigendian for an Image.

    Like cv_bridge, the bytes of a big-endian array are kept and the message says so
    (``is_bigendian=1``); readers swap them when they differ from their host's order.
    """
    arr, generic = _checked_array(cvim, keep_byte_order=True)
    if encoding is None or encoding in _PASSTHROUGH_NAMES:
        name = generic
    else:
        info = encoding_info(encoding)
        if info.generic != generic:
            raise ImageConversionError(
                f"encoding specified as {encoding}, but the image has incompatible type {generic} "
                f"(shape {arr.shape}, dtype {arr.dtype}); {encoding} needs {info.generic}"
            )
        if info.family in _YUV_CV_SUFFIXES and arr.shape[1] % 2:
            raise ImageConversionError(f"{encoding} needs an even width, got {arr.shape[1]}")
        name = info.name
    arr = np.ascontiguousarray(arr)
    return arr, name, arr.strides[0], _is_bigendian(arr)


def _flat_bytes(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous array's memory as a 1-D uint8 view."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _payload(template: Any, flat: np.ndarray) -> Any:
    """``flat`` copied into the container type a message's ``data`` field holds.

    rclpy messages get an ``array.array('B')`` (assigning an ndarray costs ~100 ms per HD frame,
    and bytes are iterated in Python when ROS_PYTHON_CHECK_FIELDS=1), numpy-backed messages a
    uint8 array, everything else ``bytes``.
    """
    if isinstance(template, array.array):
        out = array.array("B")
        out.frombytes(flat)
        return out
    if isinstance(template, np.ndarray):
        return flat.copy()
    return flat.tobytes()


def _header_fields(header: Any) -> tuple[int, int, str]:
    try:
        return int(header.stamp.sec), int(header.stamp.nanosec), str(header.frame_id)
    except (AttributeError, TypeError, ValueError):
        raise ImageConversionError(
            f"header of type {type(header).__name__} needs stamp.sec, stamp.nanosec and frame_id"
        ) from None


def _assign_header(msg: Any, header: Any) -> None:
    """Set ``msg.header``, rebuilding it in the message's own header class when types differ."""
    if header is None:
        return
    current_cls = type(getattr(msg, "header", None))
    if current_cls is type(None) or isinstance(header, current_cls):
        msg.header = header
        return
    sec, nanosec, frame_id = _header_fields(header)
    try:
        new = current_cls()
        new.stamp.sec = sec
        new.stamp.nanosec = nanosec
        new.frame_id = frame_id
        msg.header = new
    except Exception as exc:
        raise ImageConversionError(
            f"cannot copy a {type(header).__name__} header into {type(msg).__name__}: {exc}"
        ) from exc


def _new_message(msg_type: Any, kind: str) -> Any:
    cls = _message_class(kind) if msg_type is None else msg_type
    try:
        return cls()
    except Exception as exc:
        raise ImageConversionError(f"cannot build a {kind} message with {cls!r}: {exc}") from exc


def cv2_to_imgmsg(
    cvim: np.ndarray, encoding: str = PASSTHROUGH, header: Any = None, *, msg_type: Any = None
) -> Any:
    """A sensor_msgs/Image holding ``cvim`` (copied once), in the array's byte order without row padding.

    ``passthrough`` names the generic type (``"8UC3"``); any other encoding must match the array's
    dtype and channels. Builds ``msg_type()`` when given (any class with the Image fields whose
    constructor takes no arguments), else ``sensor_msgs.msg.Image`` when importable, else
    :class:`ImageMsg`. For rosbags messages use :func:`to_rosbags_image`.
    """
    arr, name, step, bigendian = _prepare_image(cvim, encoding)
    msg = _new_message(msg_type, "Image")
    try:
        _assign_header(msg, header)
        msg.height = int(arr.shape[0])
        msg.width = int(arr.shape[1])
        msg.encoding = name
        msg.is_bigendian = int(bigendian)
        msg.step = int(step)
        msg.data = _payload(getattr(msg, "data", None), _flat_bytes(arr))
    except ImageConversionError:
        raise
    except Exception as exc:  # a msg_type that rejects the fields
        raise ImageConversionError(f"{type(msg).__name__} cannot hold an image: {exc}") from exc
    return msg


# --------------------------------------------------------------------------- compressed images


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


def _known(name: str | None) -> EncodingInfo | None:
    if name is None:
        return None
    try:
        return encoding_info(name)
    except ImageConversionError:
        return None


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
        raise ImageConversionError(
            f"compressedDepth needs a 16-bit or 32FC1 source encoding, got {spec.source!r}"
        )
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


def _encode(
    cvim: Any, dst_format: str, quality: int, png_compression: int | None
) -> tuple[bytes | np.ndarray, str]:
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
    """A sensor_msgs/CompressedImage of ``cvim`` in any format cv_bridge accepts (see imagecodecs.CODECS).

    ``jpg``/``jpeg``/``jpe``, ``png``, ``bmp``/``dib``, ``ras``/``sr``, ``tif``/``tiff``; like cv_bridge,
    3/4-channel input is taken as bgr8/bgra8. ``format`` is written in its canonical spelling ("jpeg",
    "png", "bmp", "ras", "tiff"); a layout the format would silently change is refused. ``quality`` (0-100) applies to JPEG, ``png_compression`` (0-9) to PNG. Builds
    ``msg_type()`` when given, else sensor_msgs when importable, else :class:`CompressedImageMsg`.
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


# --------------------------------------------------------------------------- helpers


def to_rgb8(img_msg: Any) -> np.ndarray:
    """``HxWx3`` uint8 RGB pixels of any supported Image or CompressedImage.

    Tells the two apart by their ``encoding`` / ``format`` field. Generic types are read the OpenCV
    way (8UC3 as bgr8, 8UC1 as mono8, 16UC1 as mono16). The result may share memory with an rgb8
    message's data (read-only for bytes or rosbags data). Raises ImageConversionError otherwise.
    """
    if hasattr(img_msg, "encoding"):
        arr, info = _image_array(img_msg)
        encoding = info.name
    elif hasattr(img_msg, "format"):
        arr, encoding = _compressed_array(img_msg)
    else:
        raise ImageConversionError(
            f"{type(img_msg).__name__} is neither an Image (no 'encoding') nor a CompressedImage (no 'format')"
        )
    encoding = _RGB8_SOURCE_GUESS.get(encoding, encoding)
    if encoding == "rgb8":
        return arr
    return _convert(arr, encoding, "rgb8")


def stamp_ns(header: Any) -> int:
    """Nanoseconds since the epoch of a header's stamp (rclpy or rosbags).

    Accepts a Header, a message with a ``header`` or a Time. Raises ImageConversionError when
    there is no ``sec``/``nanosec``.
    """
    obj = getattr(header, "header", header)
    stamp = getattr(obj, "stamp", obj)
    try:
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError):
        raise ImageConversionError(f"{type(header).__name__} has no stamp with sec and nanosec") from None


def _rosbags_header(header: Any, typestore: Any) -> Any:
    header_cls = typestore.types["std_msgs/msg/Header"]
    time_cls = typestore.types["builtin_interfaces/msg/Time"]
    if isinstance(header, header_cls):
        return header
    sec, nanosec, frame_id = (0, 0, "") if header is None else _header_fields(header)
    return header_cls(stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)


def _default_typestore(typestore: Any) -> Any:
    if typestore is not None:
        return typestore
    from rosbags.typesys import Stores, get_typestore

    # sensor_msgs/Image and CompressedImage are identical in every ROS 2 distribution.
    return get_typestore(Stores.ROS2_HUMBLE)


def to_rosbags_image(
    cvim: np.ndarray, encoding: str = PASSTHROUGH, header: Any = None, typestore: Any = None
) -> Any:
    """``cvim`` as a rosbags ``sensor_msgs/msg/Image`` (for writing bags with rosbags).

    ``typestore`` defaults to rosbags' ROS 2 Humble store; ``header`` may be any header (rclpy,
    rosbags, :class:`HeaderMsg`) or None for a zero stamp. Same checks as :func:`cv2_to_imgmsg`.
    """
    arr, name, step, bigendian = _prepare_image(cvim, encoding)
    store = _default_typestore(typestore)
    image_cls = store.types["sensor_msgs/msg/Image"]
    return image_cls(
        header=_rosbags_header(header, store),
        height=int(arr.shape[0]),
        width=int(arr.shape[1]),
        encoding=name,
        is_bigendian=int(bigendian),
        step=int(step),
        data=_flat_bytes(arr).copy(),
    )


def to_rosbags_compressed_image(
    cvim: np.ndarray,
    dst_format: str = "jpg",
    header: Any = None,
    typestore: Any = None,
    *,
    quality: int = 95,
    png_compression: int | None = None,
) -> Any:
    """``cvim`` encoded as a rosbags ``sensor_msgs/msg/CompressedImage`` (see :func:`cv2_to_compressed_imgmsg`)."""
    encoded, fmt = _encode(cvim, dst_format, quality, png_compression)
    store = _default_typestore(typestore)
    compressed_cls = store.types["sensor_msgs/msg/CompressedImage"]
    return compressed_cls(header=_rosbags_header(header, store), format=fmt, data=_flat_bytes(encoded).copy())


class CvBridge:
    """Drop-in for ``cv_bridge.CvBridge``: ``from dli_perception.core.imaging import CvBridge``.

    Stateless; the methods are the module functions of the same names.
    """

    def imgmsg_to_cv2(self, img_msg: Any, desired_encoding: str = PASSTHROUGH) -> np.ndarray:
        """See :func:`imgmsg_to_cv2`."""
        return imgmsg_to_cv2(img_msg, desired_encoding)

    def cv2_to_imgmsg(
        self, cvim: np.ndarray, encoding: str = PASSTHROUGH, header: Any = None, **kwargs: Any
    ) -> Any:
        """See :func:`cv2_to_imgmsg`."""
        return cv2_to_imgmsg(cvim, encoding, header, **kwargs)

    def compressed_imgmsg_to_cv2(self, cmprs_img_msg: Any, desired_encoding: str = PASSTHROUGH) -> np.ndarray:
        """See :func:`compressed_imgmsg_to_cv2`."""
        return compressed_imgmsg_to_cv2(cmprs_img_msg, desired_encoding)

    def cv2_to_compressed_imgmsg(self, cvim: np.ndarray, dst_format: str = "jpg", **kwargs: Any) -> Any:
        """See :func:`cv2_to_compressed_imgmsg`."""
        return cv2_to_compressed_imgmsg(cvim, dst_format, **kwargs)

    def encoding_to_dtype_with_channels(self, encoding: str) -> tuple[np.dtype, int]:
        """Encoding -> (numpy dtype, channels)."""
        return encoding_to_dtype_with_channels(encoding)

    def encoding_to_cvtype2(self, encoding: str) -> int:
        """Encoding -> OpenCV type constant (``cv2.CV_8UC3`` for bgr8)."""
        info = encoding_info(encoding)
        return self.dtype_with_channels_to_cvtype2(info.dtype, info.channels)

    def dtype_with_channels_to_cvtype2(self, dtype: Any, n_channels: int) -> int:
        """(numpy dtype, channels) -> OpenCV type constant."""
        cv2 = _cv2()
        depth = generic_encoding(dtype, n_channels).split("C")[0]
        return int(cv2.CV_MAKETYPE(getattr(cv2, f"CV_{depth}"), n_channels))

    def cvtype2_to_dtype_with_channels(self, cvtype: int) -> tuple[np.dtype, int]:
        """OpenCV type constant -> (numpy dtype, channels)."""
        return cv_type_layout(cvtype)
