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

The package holds one piece per module: ``encoding_table`` (names and layouts), ``cvtypes``
(OpenCV type numbers), ``conversion`` (colour and depth rules, cv_bridge backend), ``messages``
(message stand-ins and field checks), ``raw`` (Image), ``formats`` and ``compressed``
(CompressedImage), ``bagmessages`` (rosbags messages), ``bridge`` (``to_rgb8``, ``CvBridge``) and
``display`` (``cvtColorForDisplay``). Import the names below from ``dli_perception.core.imaging``.
"""

from __future__ import annotations

from dli_perception.core.imaging.bagmessages import to_rosbags_compressed_image, to_rosbags_image
from dli_perception.core.imaging.bridge import CvBridge, to_rgb8
from dli_perception.core.imaging.compressed import compressed_imgmsg_to_cv2, cv2_to_compressed_imgmsg
from dli_perception.core.imaging.conversion import FORCE_BUILTIN_ENV, bridge_backend, convert
from dli_perception.core.imaging.encoding_table import (
    ENCODINGS,
    PASSTHROUGH,
    EncodingInfo,
    encoding_info,
    encoding_to_dtype_with_channels,
    generic_encoding,
)
from dli_perception.core.imaging.formats import MAX_DECODED_PIXELS
from dli_perception.core.imaging.messages import CompressedImageMsg, HeaderMsg, ImageMsg, TimeMsg, stamp_ns
from dli_perception.core.imaging.raw import cv2_to_imgmsg, imgmsg_to_cv2
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


force_builtin_bridge: bool = False
"""True ignores an installed cv_bridge, like ``DLI_PERCEPTION_FORCE_BUILTIN_BRIDGE=1`` (read at each conversion)."""
