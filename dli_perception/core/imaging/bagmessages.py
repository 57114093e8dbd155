"""numpy images as rosbags messages (``sensor_msgs/msg/Image`` and ``CompressedImage``) for writing bags."""

from __future__ import annotations

from typing import Any

import numpy as np

from dli_perception.core.imaging.compressed import _encode
from dli_perception.core.imaging.encoding_table import PASSTHROUGH
from dli_perception.core.imaging.messages import _flat_bytes, _header_fields
from dli_perception.core.imaging.raw import _prepare_image


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


def to_rosbags_image(cvim: np.ndarray, encoding: str = PASSTHROUGH, header: Any = None, typestore: Any = None) -> Any:
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
