"""Message objects and their fields: stand-ins for the sensor_msgs classes, checks of what a message holds.

Every reader here accepts rclpy messages (``data`` is an ``array.array``), rosbags messages
(``data`` is a uint8 numpy array) and plain namespaces; every failure raises
:class:`~dli_perception.errors.ImageConversionError`.
"""

from __future__ import annotations

import array
import functools
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dli_perception.errors import ImageConversionError

logger = logging.getLogger(__name__)

_MAX_UINT32 = 2**32 - 1


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


def _new_message(msg_type: Any, kind: str) -> Any:
    cls = _message_class(kind) if msg_type is None else msg_type
    try:
        return cls()
    except Exception as exc:
        raise ImageConversionError(f"cannot build a {kind} message with {cls!r}: {exc}") from exc


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


# --------------------------------------------------------------------------- writing fields


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
