"""Uncompressed ``sensor_msgs/Image`` to and from numpy: :func:`imgmsg_to_cv2` and :func:`cv2_to_imgmsg`.

Reading is zero-copy when the layout allows it (no row padding, host byte order, aligned buffer);
writing copies once and keeps a big-endian array's bytes with ``is_bigendian=1``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from dli_perception.core.imaging.conversion import _YUV_CV_SUFFIXES, _convert
from dli_perception.core.imaging.encoding_table import (
    _PASSTHROUGH_NAMES,
    PASSTHROUGH,
    EncodingInfo,
    encoding_info,
    generic_encoding,
)
from dli_perception.core.imaging.messages import (
    _MAX_UINT32,
    _assign_header,
    _bigendian_field,
    _byte_buffer,
    _flat_bytes,
    _get_field,
    _new_message,
    _payload,
    _size_field,
)
from dli_perception.errors import ImageConversionError

_HOST_BIGENDIAN = sys.byteorder == "big"


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
        raise ImageConversionError(f"{info.name} packs two pixels in 4 bytes, so width must be even, got {width}")
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


def cv2_to_imgmsg(cvim: np.ndarray, encoding: str = PASSTHROUGH, header: Any = None, *, msg_type: Any = None) -> Any:
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
