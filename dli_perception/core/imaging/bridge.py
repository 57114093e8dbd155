"""Entry points that take either kind of message: :func:`to_rgb8`, and :class:`CvBridge`, cv_bridge's class."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from dli_perception.core.imaging.compressed import _compressed_array, compressed_imgmsg_to_cv2, cv2_to_compressed_imgmsg
from dli_perception.core.imaging.conversion import _convert, _cv2
from dli_perception.core.imaging.cvtypes import cv_type_layout
from dli_perception.core.imaging.encoding_table import (
    PASSTHROUGH,
    encoding_info,
    encoding_to_dtype_with_channels,
    generic_encoding,
)
from dli_perception.core.imaging.raw import _image_array, cv2_to_imgmsg, imgmsg_to_cv2
from dli_perception.errors import ImageConversionError

# How to_rgb8 reads generic types: OpenCV's channel order (bgr) and mono for one channel.
_RGB8_SOURCE_GUESS: Mapping[str, str] = MappingProxyType(
    {"8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8", "16UC1": "mono16", "16UC3": "bgr16", "16UC4": "bgra16"}
)


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


class CvBridge:
    """Drop-in for ``cv_bridge.CvBridge``: ``from dli_perception.core.imaging import CvBridge``.

    Stateless; the methods are the module functions of the same names.
    """

    def imgmsg_to_cv2(self, img_msg: Any, desired_encoding: str = PASSTHROUGH) -> np.ndarray:
        """See :func:`imgmsg_to_cv2`."""
        return imgmsg_to_cv2(img_msg, desired_encoding)

    def cv2_to_imgmsg(self, cvim: np.ndarray, encoding: str = PASSTHROUGH, header: Any = None, **kwargs: Any) -> Any:
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
