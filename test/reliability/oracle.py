"""An oracle for the fuzz tests that shares no code with the converter it judges.

:func:`expected_rgb8` decides from the message fields alone whether a ``sensor_msgs/Image`` or
``CompressedImage`` is valid, and what RGB pixels it holds, with its own table of encodings and
its own decoding in numpy. Compressed data is decoded with OpenCV directly (the library, not the
package's converter). A converter that refused every message, accepted a truncated one or swapped
two channels disagrees with it.

What counts as valid is the converter's documented contract: encoding names exact or
case-insensitive after trimming spaces; ``is_bigendian`` 0 or 1; width, height > 0; ``step`` at
least one row; ``data`` at least ``step * height`` bytes; yuv422 widths even.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_DECODED_PIXELS = 1 << 26  # the converter's documented limit on what a compressed header may declare


@dataclass(frozen=True)
class Expected:
    """The oracle's verdict: ``rgb`` is None for a message the converter must refuse.

    ``tolerance`` is the largest per-channel difference allowed from ``rgb`` (colour-space
    conversions round differently); ``exact_mask`` marks the pixels that must match exactly
    (demosaicing only fixes the sampled colour at each site).
    """

    rgb: np.ndarray | None
    tolerance: int = 0
    exact_mask: np.ndarray | None = None

    @property
    def valid(self) -> bool:
        return self.rgb is not None


REFUSED = Expected(None)

# name -> (bytes per channel value, channels, how to read it as RGB)
_LAYOUTS: dict[str, tuple[int, int, str]] = {
    "rgb8": (1, 3, "rgb"),
    "bgr8": (1, 3, "bgr"),
    "rgba8": (1, 4, "rgba"),
    "bgra8": (1, 4, "bgra"),
    "mono8": (1, 1, "gray"),
    "rgb16": (2, 3, "rgb"),
    "bgr16": (2, 3, "bgr"),
    "rgba16": (2, 4, "rgba"),
    "bgra16": (2, 4, "bgra"),
    "mono16": (2, 1, "gray"),
    "8uc1": (1, 1, "gray"),  # generic types read the OpenCV way: one channel grey, three BGR, four BGRA
    "8uc3": (1, 3, "bgr"),
    "8uc4": (1, 4, "bgra"),
    "16uc1": (2, 1, "gray"),
    "16uc3": (2, 3, "bgr"),
    "16uc4": (2, 4, "bgra"),
    "yuv422": (1, 2, "uyvy"),
    "uyvy": (1, 2, "uyvy"),
    "yuv422_yuy2": (1, 2, "yuyv"),
    "yuyv": (1, 2, "yuyv"),
    **{f"bayer_{p}{bits}": (bits // 8, 1, f"bayer_{p}") for p in ("rggb", "bggr", "gbrg", "grbg") for bits in (8, 16)},
}


def _to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit values shown in 8 bits: divide by 257 and round (what cv::Mat::convertTo does)."""
    return np.floor(values.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV to RGB; luma below 16 counts as 16 (black), as OpenCV reads it."""
    c = 1.164 * np.maximum(y.astype(np.float64) - 16.0, 0.0)
    d, e = u.astype(np.float64) - 128.0, v.astype(np.float64) - 128.0
    rgb = np.stack([c + 1.596 * e, c - 0.392 * d - 0.813 * e, c + 2.017 * d], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _packed_yuv(raw: np.ndarray, order: str) -> np.ndarray:
    """``raw``: rows of packed bytes, 4 bytes per two pixels."""
    height, width = raw.shape[0], raw.shape[1] // 2
    pairs = raw.reshape(height, width // 2, 4)
    if order == "uyvy":
        u, y0, v, y1 = (pairs[..., i] for i in range(4))
    else:
        y0, u, y1, v = (pairs[..., i] for i in range(4))
    out = np.empty((height, width, 3), np.uint8)
    out[:, 0::2] = _yuv_to_rgb(y0, u, v)
    out[:, 1::2] = _yuv_to_rgb(y1, u, v)
    return out


def _bayer(raw: np.ndarray, pattern: str) -> Expected:
    """Only the sampled colour at each site is known exactly; the others are interpolated."""
    values = raw if raw.dtype == np.uint8 else _to_8bit(raw)
    h, w = values.shape
    rgb = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w, 3), bool)
    for dy in (0, 1):
        for dx in (0, 1):
            channel = "rgb".index(pattern[2 * dy + dx])
            rgb[dy::2, dx::2, channel] = values[dy::2, dx::2]
            mask[dy::2, dx::2, channel] = True
    mask[:1], mask[-1:], mask[:, :1], mask[:, -1:] = False, False, False, False  # borders are extrapolated
    return Expected(rgb, tolerance=255, exact_mask=mask)


def _raw_image(msg: Any) -> Expected:
    name = msg.encoding.strip().lower() if isinstance(msg.encoding, str) else None
    layout = _LAYOUTS.get(name)
    if layout is None or int(msg.is_bigendian) not in (0, 1):
        return REFUSED
    itemsize, channels, kind = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0 or step < width * channels * itemsize or len(msg.data) < step * height:
        return REFUSED
    if kind in ("uyvy", "yuyv") and width % 2:
        return REFUSED
    data = bytes(msg.data)[: step * height]
    rows = np.frombuffer(data, np.uint8).reshape(height, step)[:, : width * channels * itemsize]
    raw = rows
    if itemsize == 2:
        order = ">" if int(msg.is_bigendian) else "<"
        raw = np.frombuffer(rows.tobytes(), np.dtype(order + "u2")).reshape(height, width * channels)
    if kind.startswith("bayer_"):
        return _bayer(raw, kind[len("bayer_") :])
    values = raw if itemsize == 1 else _to_8bit(raw)
    if kind in ("uyvy", "yuyv"):
        return Expected(_packed_yuv(values.reshape(height, width * 2), kind), tolerance=3)
    pixels = values.reshape(height, width, channels)
    if kind == "gray":
        return Expected(np.repeat(pixels, 3, axis=2))
    if kind in ("bgr", "bgra"):
        return Expected(np.ascontiguousarray(pixels[..., 2::-1]))
    return Expected(np.ascontiguousarray(pixels[..., :3]))


def _declared_too_big(data: bytes) -> bool:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width * height > MAX_DECODED_PIXELS
    return False  # the strategies declare at most 2048x2048 in JPEG headers


def _compressed(msg: Any) -> Expected:
    import cv2

    data = bytes(msg.data)
    if not data or "compresseddepth" in msg.format.lower():  # the strategies never build a valid depth payload
        return REFUSED
    if _declared_too_big(data):
        return REFUSED
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return REFUSED
    if img.dtype == np.uint16:
        img = _to_8bit(img)
    elif img.dtype != np.uint8:
        return REFUSED
    if img.ndim == 2:
        return Expected(np.repeat(img[..., None], 3, axis=2))
    return Expected(np.ascontiguousarray(img[..., 2::-1]))  # OpenCV decodes colour as BGR(A)


def expected_rgb8(msg: Any) -> Expected:
    """What a correct ``to_rgb8(msg)`` returns (or that it must refuse ``msg``)."""
    return _compressed(msg) if hasattr(msg, "format") else _raw_image(msg)


def agrees(expected: Expected, rgb: np.ndarray) -> bool:
    """True when ``rgb`` is what ``expected`` says, within its tolerance and exact where it must be."""
    if expected.rgb is None or rgb.shape != expected.rgb.shape or rgb.dtype != np.uint8:
        return False
    diff = np.abs(rgb.astype(np.int16) - expected.rgb.astype(np.int16))
    if expected.exact_mask is not None and diff[expected.exact_mask].any():
        return False
    return int(diff.max(initial=0)) <= expected.tolerance
