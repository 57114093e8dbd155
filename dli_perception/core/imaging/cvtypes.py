"""OpenCV type names and numbers: ``"8UC3"`` <-> ``cv2.CV_8UC3``.

An OpenCV type packs a depth (8U, 8S, 16U, 16S, 32S, 32F, 64F) and a channel count into one
integer. ROS names the same layouts ``<depth>C<channels>`` (``sensor_msgs/image_encodings``
"generic" encodings, 1 to :data:`MAX_CHANNELS` channels); :func:`cv_type_of` gives the number of a
dtype and channel count, and :func:`~dli_perception.core.imaging.encoding_table.cv_type` that of any
encoding name, as cv_bridge's ``getCvType`` does. The numbers are those of the installed OpenCV (OpenCV 5 packs
them differently from OpenCV 4), so only the name functions work without cv2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from dli_perception.errors import ImageConversionError

__all__ = ["DEPTHS", "MAX_CHANNELS", "cv_type_layout", "cv_type_of", "generic_name", "parse_generic"]

MAX_CHANNELS = 512
"""Most channels of a generic encoding (OpenCV 4's ``CV_CN_MAX``, which cv_bridge is built with)."""

DEPTHS: Mapping[str, np.dtype] = MappingProxyType(
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
"""OpenCV depth name -> numpy dtype."""

_DEPTH_BY_DTYPE: Mapping[tuple[str, int], str] = MappingProxyType(
    {(dt.kind, dt.itemsize): name for name, dt in DEPTHS.items()}
)
_GENERIC_RE = re.compile(r"(?P<depth>8U|8S|16U|16S|32S|32F|64F)(?:C(?P<channels>[0-9]{1,3}))?")


def parse_generic(name: str, *, bare_depth: bool = False) -> tuple[np.dtype, int] | None:
    """``(dtype, channels)`` of a generic name such as ``"8UC5"``; None when ``name`` is not one.

    ``bare_depth`` also accepts a depth alone (``"32F"`` -> one channel). Channel counts outside
    1..MAX_CHANNELS raise ImageConversionError, since the name is otherwise well formed.
    """
    match = _GENERIC_RE.fullmatch(name)
    if match is None or (match.group("channels") is None and not bare_depth):
        return None
    channels = int(match.group("channels") or 1)
    if not 1 <= channels <= MAX_CHANNELS:
        raise ImageConversionError(f"{name}: an OpenCV image has 1 to {MAX_CHANNELS} channels, not {channels}")
    return DEPTHS[match.group("depth")], channels


def generic_name(dtype: Any, channels: int) -> str:
    """Generic name (``"8UC3"``, ``"32FC1"`` ...) for a numpy dtype and channel count.

    Raises ImageConversionError for dtypes OpenCV images cannot hold (bool, int64, float16 ...)
    and channel counts outside 1..MAX_CHANNELS.
    """
    dt = np.dtype(dtype)
    depth = _DEPTH_BY_DTYPE.get((dt.kind, dt.itemsize))
    if depth is None or not 1 <= channels <= MAX_CHANNELS:
        raise ImageConversionError(
            f"an image of dtype {dt} with {channels} channel(s) has no ROS encoding; use uint8, int8, "
            f"uint16, int16, int32, float32 or float64 with 1 to {MAX_CHANNELS} channels"
        )
    return f"{depth}C{channels}"


def _pack(depth: str, channels: int) -> int:
    """The installed OpenCV's type number; ImageConversionError when it cannot hold that many channels."""
    import cv2  # lazy: the name functions above are used where cv2 is not loaded yet

    number = int(cv2.CV_MAKETYPE(getattr(cv2, f"CV_{depth}"), channels))
    if cv_type_layout(number) != (DEPTHS[depth], channels):
        raise ImageConversionError(f"OpenCV {cv2.__version__} has no type for {depth} with {channels} channels")
    return number


def cv_type_of(dtype: Any, channels: int) -> int:
    """The installed OpenCV's type number for a numpy dtype and channel count (``uint8``, 3 -> ``CV_8UC3``).

    Raises ImageConversionError for dtypes OpenCV images cannot hold and channel counts it cannot pack.
    """
    dt = np.dtype(dtype)
    depth = _DEPTH_BY_DTYPE.get((dt.kind, dt.itemsize))
    if depth is None:
        raise ImageConversionError(f"OpenCV images cannot hold dtype {dt}")
    return _pack(depth, channels)


def cv_type_layout(cvtype: int) -> tuple[np.dtype, int]:
    """(numpy dtype, channels) of the installed OpenCV's type number; ImageConversionError when it is not one."""
    import cv2

    if isinstance(cvtype, bool) or not isinstance(cvtype, (int, np.integer)) or cvtype < 0:
        raise ImageConversionError(f"OpenCV type must be a non-negative integer, got {cvtype!r}")
    shift = int(cv2.CV_MAKETYPE(cv2.CV_8U, 2)).bit_length() - 1  # bits OpenCV keeps for the depth
    number = int(cvtype)
    depths = {int(getattr(cv2, f"CV_{name}")): name for name in DEPTHS}
    depth = depths.get(number & ((1 << shift) - 1))
    channels = (number >> shift) + 1
    if depth is None or channels > MAX_CHANNELS:
        raise ImageConversionError(f"OpenCV type {cvtype} has no ROS encoding")
    return DEPTHS[depth], channels
