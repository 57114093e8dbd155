"""The image encodings this package reads and writes, and what each stores per pixel.

:data:`ENCODINGS` maps every ``sensor_msgs/Image`` encoding name (colour encodings such as
``rgb8``, ``yuv422`` or ``bayer_rggb16``, and OpenCV generic types such as ``8UC3``) to an
:class:`EncodingInfo`; :func:`encoding_info` also takes generic types with up to 512 channels.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from dli_perception.core.imaging.cvtypes import DEPTHS, cv_type_of, generic_name, parse_generic
from dli_perception.errors import ImageConversionError

PASSTHROUGH = "passthrough"
_PASSTHROUGH_NAMES = frozenset({PASSTHROUGH, ""})


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
        return generic_name(self.dtype, self.channels)

    @property
    def is_color(self) -> bool:
        """True for colour encodings (mono, rgb, yuv, bayer ...), False for generic types."""
        return self.family is not None


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
        name: EncodingInfo(name, DEPTHS[depth], channels, family) for name, depth, channels, family in _COLOR_ENCODINGS
    }
    for depth, dtype in DEPTHS.items():
        for channels in (1, 2, 3, 4):
            name = f"{depth}C{channels}"
            table[name] = EncodingInfo(name, dtype, channels, None)
    return table


ENCODINGS: Mapping[str, EncodingInfo] = MappingProxyType(_build_encodings())
"""Every supported encoding name -> :class:`EncodingInfo`."""

_ENCODINGS_FOLDED: Mapping[str, EncodingInfo] = MappingProxyType({k.lower(): v for k, v in ENCODINGS.items()})


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


def _known(name: str | None) -> EncodingInfo | None:
    if name is None:
        return None
    try:
        return encoding_info(name)
    except ImageConversionError:
        return None


def cv_type(encoding: str) -> int:
    """OpenCV type number of an encoding: colour names, generic names or a bare depth.

    ``cv_type("bgr8") == cv2.CV_8UC3``, ``cv_type("8U") == cv2.CV_8UC1``. Raises
    ImageConversionError for names that are none of these.
    """
    if not isinstance(encoding, str):
        raise ImageConversionError(f"image encoding must be a string, got {type(encoding).__name__}")
    info = ENCODINGS.get(encoding)
    if info is not None:
        return cv_type_of(info.dtype, info.channels)
    parsed = parse_generic(encoding, bare_depth=True)
    if parsed is None:
        raise ImageConversionError(
            f"unrecognized image encoding {encoding!r}: expected a ROS colour encoding (bgr8, mono16 ...), "
            "a generic type such as 32FC1, or a bare depth such as 16U"
        )
    return cv_type_of(*parsed)
