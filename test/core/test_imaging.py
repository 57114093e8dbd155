"""Tests for dli_perception.core.imaging: pixels compared exactly, on rclpy, rosbags and plain messages."""

from __future__ import annotations

import array
import functools
import struct
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from dli_perception.core import imaging
from dli_perception.core.imaging import (
    ENCODINGS,
    CvBridge,
    ImageMsg,
    bridge,
    compressed_imgmsg_to_cv2,
    conversion,
    cv2_to_compressed_imgmsg,
    cv2_to_imgmsg,
    encoding_info,
    encoding_table,
    imgmsg_to_cv2,
    messages,
    stamp_ns,
    to_rgb8,
    to_rosbags_compressed_image,
    to_rosbags_image,
)
from dli_perception.errors import CvBridgeError, ImageConversionError

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
RB_IMAGE = TYPESTORE.types["sensor_msgs/msg/Image"]
RB_COMPRESSED = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
RB_HEADER = TYPESTORE.types["std_msgs/msg/Header"]
RB_TIME = TYPESTORE.types["builtin_interfaces/msg/Time"]

H, W = 6, 8  # even sizes: yuv422 and bayer need them


def random_image(encoding: str, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """Random pixels covering the dtype's whole range (floats: finite values of both signs)."""
    info = encoding_info(encoding)
    rng = np.random.default_rng(seed)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype.kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(info.dtype)
    limits = np.iinfo(info.dtype)
    return rng.integers(limits.min, limits.max, size=shape, endpoint=True, dtype=info.dtype)


def namespace_msg(arr: np.ndarray, encoding: str, *, step: int | None = None, bigendian: bool = False, **kw):
    """A plain object with the Image fields holding ``arr`` as bytes."""
    data = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<")).tobytes()
    fields = {
        "header": imaging.HeaderMsg(),
        "height": arr.shape[0],
        "width": arr.shape[1],
        "encoding": encoding,
        "is_bigendian": int(bigendian),
        "step": len(data) // arr.shape[0] if step is None else step,
        "data": data,
    }
    fields.update(kw)
    return SimpleNamespace(**fields)


def rosbags_roundtrip(msg):
    """A rosbags message as it comes out of a bag: serialised to CDR and read back."""
    raw = TYPESTORE.serialize_cdr(msg, msg.__msgtype__)
    return TYPESTORE.deserialize_cdr(raw, msg.__msgtype__)


def as_message(arr: np.ndarray, encoding: str, container: str):
    if container == "rclpy":
        msg = cv2_to_imgmsg(arr, encoding)
        assert type(msg) is Image and type(msg.data) is array.array
        return msg
    if container == "rosbags":
        return rosbags_roundtrip(to_rosbags_image(arr, encoding, typestore=TYPESTORE))
    return namespace_msg(arr, encoding)


# --------------------------------------------------------------------------- encodings table


def test_encoding_table_covers_the_documented_encodings():
    expected = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "bgr16", "rgba16", "bgra16"}
    expected |= {"yuv422", "uyvy", "yuv422_yuy2", "yuyv"}
    expected |= {f"bayer_{p}{b}" for p in ("rggb", "bggr", "gbrg", "grbg") for b in (8, 16)}
    expected |= {f"{d}C{c}" for d in ("8U", "8S", "16U", "16S", "32S", "32F", "64F") for c in (1, 2, 3, 4)}
    assert set(ENCODINGS) == expected
    assert imaging.encoding_to_dtype_with_channels("bgra16") == (np.dtype(np.uint16), 4)
    assert imaging.encoding_to_dtype_with_channels("32FC2") == (np.dtype(np.float32), 2)
    assert encoding_info("yuv422").channels == 2 and encoding_info("bayer_gbrg16").bit_depth == 16
    assert encoding_info("RGB8").name == "rgb8"  # tolerant of drivers that shout
    assert encoding_info("rgb8").generic == "8UC3" and not encoding_info("8UC3").is_color


def test_every_conversion_names_a_real_opencv_code():
    names = {step for steps in conversion._CONVERSIONS.values() for step in steps if step != conversion._DEPTH}
    assert names and all(hasattr(cv2, name) for name in names), sorted(n for n in names if not hasattr(cv2, n))


@pytest.mark.parametrize("bad", ["rgb9", "jpeg", "", None, 3, b"rgb8"])
def test_unknown_encodings_raise(bad):
    with pytest.raises(ImageConversionError):
        encoding_info(bad)


def test_error_type_is_cv_bridge_compatible():
    assert CvBridgeError is ImageConversionError is imaging.CvBridgeError
    assert issubclass(ImageConversionError, TypeError)  # cv_bridge raises TypeError for non-arrays


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("container", ["rclpy", "rosbags", "namespace"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding, container):
    arr = random_image(encoding, seed=len(encoding))
    msg = as_message(arr, encoding, container)
    info = encoding_info(encoding)
    assert msg.encoding == encoding and msg.height == H and msg.width == W
    assert msg.step == W * info.channels * info.dtype.itemsize
    assert msg.is_bigendian == (sys.byteorder == "big")
    out = imgmsg_to_cv2(msg)
    assert out.dtype == info.dtype and out.dtype.isnative
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(imgmsg_to_cv2(msg, encoding), arr)  # same encoding: a copy


@pytest.mark.parametrize("encoding", ["mono8", "bgr8", "16SC2", "32FC3", "64FC1"])
def test_passthrough_encoding_is_the_generic_type(encoding):
    arr = random_image(encoding)
    msg = cv2_to_imgmsg(arr)
    assert msg.encoding == encoding_info(encoding).generic
    np.testing.assert_array_equal(imgmsg_to_cv2(msg), arr)
    shape1 = cv2_to_imgmsg(arr[..., :1] if arr.ndim == 3 else arr[..., None])
    assert shape1.encoding.endswith("C1")


def test_passthrough_is_zero_copy_and_read_only_for_bytes():
    arr = random_image("rgb8")
    shared = bytearray(arr.tobytes())
    msg = namespace_msg(arr, "rgb8", data=shared)
    out = imgmsg_to_cv2(msg)
    shared[0] ^= 0xFF  # the array is a view onto the message's buffer
    assert out[0, 0, 0] == arr[0, 0, 0] ^ 0xFF
    frozen = imgmsg_to_cv2(namespace_msg(arr, "rgb8"))
    assert not frozen.flags.writeable
    copied = imgmsg_to_cv2(namespace_msg(arr, "rgb8", data=bytearray(arr.tobytes())), "rgb8")
    assert copied.flags.writeable and copied.flags.owndata  # a named encoding returns a copy, as cv_bridge


@pytest.mark.parametrize("encoding", ["mono8", "rgb8", "mono16", "32FC3", "yuv422", "64FC2", "bayer_grbg16"])
@pytest.mark.parametrize("pad", [1, 3, 16])
def test_step_padding_is_skipped(encoding, pad):
    arr = random_image(encoding, seed=pad)
    row = arr.reshape(H, -1).view(np.uint8).reshape(H, -1)
    padded = np.concatenate([row, np.full((H, pad), 0xAB, np.uint8)], axis=1)
    msg = namespace_msg(arr, encoding, step=padded.shape[1], data=padded.tobytes())
    out = imgmsg_to_cv2(msg)
    assert out.flags.c_contiguous and out.flags.aligned
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "encoding", ["mono16", "rgb16", "bgra16", "16UC1", "16SC3", "32SC2", "32FC1", "64FC4", "bayer_rggb16"]
)
def test_big_endian_data_is_swapped_to_host_order(encoding):
    arr = random_image(encoding, seed=7)
    msg = namespace_msg(arr, encoding, bigendian=True)
    assert msg.data != namespace_msg(arr, encoding).data  # really stored in the other order
    out = imgmsg_to_cv2(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    padded = namespace_msg(arr, encoding, bigendian=True)
    row = np.frombuffer(padded.data, np.uint8).reshape(H, -1)
    padded.data = np.concatenate([row, np.zeros((H, 5), np.uint8)], axis=1).tobytes()
    padded.step = row.shape[1] + 5
    np.testing.assert_array_equal(imgmsg_to_cv2(padded), arr)


def test_big_endian_flag_is_ignored_for_bytes():
    arr = random_image("rgb8")
    np.testing.assert_array_equal(imgmsg_to_cv2(namespace_msg(arr, "rgb8", is_bigendian=1)), arr)


def test_cv2_to_imgmsg_keeps_the_bytes_of_a_big_endian_array_and_flags_them():
    arr = random_image("16UC3")
    msg = cv2_to_imgmsg(arr.astype(">u2"), "16UC3")
    assert msg.is_bigendian == 1
    assert bytes(msg.data) == arr.astype(">u2").tobytes()
    np.testing.assert_array_equal(imgmsg_to_cv2(msg), arr)


def test_unaligned_rosbags_data_is_realigned():
    arr = random_image("64FC1")
    msg = to_rosbags_image(arr, "64FC1", typestore=TYPESTORE)
    msg.data = np.frombuffer(b"\0" + arr.tobytes(), np.uint8, offset=1)  # as a view into a CDR buffer
    out = imgmsg_to_cv2(msg)
    assert out.flags.aligned
    np.testing.assert_array_equal(out, arr)


def test_non_contiguous_array_round_trips():
    arr = random_image("bgr8", height=10, width=12)
    crop = arr[1:7, 2:10]  # a view with row strides
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(crop, "bgr8")), crop)


# --------------------------------------------------------------------------- yuv and bayer


def smooth_bgr(height: int = H, width: int = W) -> np.ndarray:
    """A BGR image whose pixel pairs share their colour, so 4:2:2 subsampling loses little."""
    rng = np.random.default_rng(3)
    half = rng.integers(30, 220, size=(height, width // 2, 3), dtype=np.uint8)
    return np.repeat(half, 2, axis=1)


@pytest.mark.parametrize(
    ("encoding", "order"), [("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUY2"), ("yuyv", "YUY2")]
)
def test_yuv422_matches_opencv(encoding, order):
    bgr = smooth_bgr()
    packed = cv2.cvtColor(bgr, getattr(cv2, f"COLOR_BGR2YUV_{order}"))
    assert packed.shape == (H, W, 2)
    msg = cv2_to_imgmsg(packed, encoding)
    np.testing.assert_array_equal(imgmsg_to_cv2(msg), packed)
    for target, name in [
        ("bgr8", "BGR"),
        ("rgb8", "RGB"),
        ("mono8", "GRAY"),
        ("rgba8", "RGBA"),
        ("bgra8", "BGRA"),
    ]:
        expected = cv2.cvtColor(packed, getattr(cv2, f"COLOR_YUV2{name}_{order}"))
        np.testing.assert_array_equal(imgmsg_to_cv2(msg, target), expected, err_msg=target)
    assert np.abs(imgmsg_to_cv2(msg, "bgr8").astype(int) - bgr).max() <= 3  # the right byte order


def test_yuv422_byte_orders_differ():
    packed = cv2.cvtColor(smooth_bgr(), cv2.COLOR_BGR2YUV_UYVY)
    as_uyvy = imgmsg_to_cv2(cv2_to_imgmsg(packed, "yuv422"), "bgr8")
    as_yuyv = imgmsg_to_cv2(cv2_to_imgmsg(packed, "yuv422_yuy2"), "bgr8")
    assert not np.array_equal(as_uyvy, as_yuyv)


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """Sample a BGR image through a Bayer filter named by its top-left 2x2 block (ROS naming)."""
    channel = {"r": 2, "g": 1, "b": 0}
    out = np.empty(bgr.shape[:2], bgr.dtype)
    for i, colour in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = bgr[dy::2, dx::2, channel[colour]]
    return out


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_demosaics_to_the_right_colours(pattern, bits):
    dtype = np.uint8 if bits == 8 else np.uint16
    colour = np.array([50, 100, 200], dtype=np.int64) * (1 if bits == 8 else 257)  # B, G, R
    bgr = np.broadcast_to(colour.astype(dtype), (8, 8, 3)).copy()
    raw = mosaic(bgr, pattern)
    msg = cv2_to_imgmsg(raw, f"bayer_{pattern}{bits}")
    np.testing.assert_array_equal(imgmsg_to_cv2(msg), raw)
    inner = (slice(2, 6), slice(2, 6))
    np.testing.assert_array_equal(imgmsg_to_cv2(msg, f"bgr{bits}")[inner], bgr[inner])
    np.testing.assert_array_equal(imgmsg_to_cv2(msg, f"rgb{bits}")[inner], bgr[inner][..., ::-1])
    np.testing.assert_array_equal(imgmsg_to_cv2(msg, "rgb8")[inner], np.broadcast_to([200, 100, 50], (4, 4, 3)))
    mono = imgmsg_to_cv2(msg, f"mono{bits}")
    assert mono.shape == (8, 8) and mono.dtype == dtype
    with pytest.raises(ImageConversionError):
        imgmsg_to_cv2(msg, "rgba8")  # cv_bridge has no bayer -> rgba conversion


# --------------------------------------------------------------------------- desired_encoding


def test_colour_order_conversions():
    rgb = random_image("rgb8")
    msg = cv2_to_imgmsg(rgb, "rgb8")
    np.testing.assert_array_equal(imgmsg_to_cv2(msg, "bgr8"), rgb[..., ::-1])
    rgba = random_image("rgba8")
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(rgba, "rgba8"), "rgb8"), rgba[..., :3])
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(rgba, "rgba8"), "bgr8"), rgba[..., 2::-1])
    bgr_a = imgmsg_to_cv2(msg, "bgra8")
    np.testing.assert_array_equal(bgr_a[..., :3], rgb[..., ::-1])
    assert (bgr_a[..., 3] == 255).all()
    bgr = random_image("bgr8")
    np.testing.assert_array_equal(
        imgmsg_to_cv2(cv2_to_imgmsg(bgr, "bgr8"), "mono8"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    )
    mono = random_image("mono8")
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(mono, "mono8"), "rgb8"), np.dstack([mono] * 3))


def test_bit_depth_is_scaled_like_cv_bridge():
    mono16 = random_image("mono16")
    out = imgmsg_to_cv2(cv2_to_imgmsg(mono16, "mono16"), "mono8")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.rint(mono16 / 257.0).astype(np.uint8))
    mono8 = random_image("mono8")
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(mono8, "mono8"), "mono16"), mono8.astype(np.uint16) * 257)
    rgb16 = random_image("rgb16")
    np.testing.assert_array_equal(
        imgmsg_to_cv2(cv2_to_imgmsg(rgb16, "rgb16"), "bgr8"),
        np.rint(rgb16[..., ::-1] / 257.0).astype(np.uint8),
    )
    # generic types change depth too (scaled between 8 and 16 bits, saturated otherwise)
    u16 = random_image("16UC1")
    np.testing.assert_array_equal(
        imgmsg_to_cv2(cv2_to_imgmsg(u16, "16UC1"), "8UC1"), np.rint(u16 / 257.0).astype(np.uint8)
    )
    floats = np.array([[-5.0, 0.4, 0.6, 70000.0]], np.float32)
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(floats), "16UC1"), [[0, 0, 1, 65535]])


@pytest.mark.parametrize(
    ("encoding", "desired"),
    [
        ("8UC3", "bgr8"),  # generic -> colour has no meaning to cv_bridge
        ("bgr8", "16UC1"),  # 3 channels -> 1
        ("mono8", "8UC3"),
        ("16UC1", "16UC3"),
        ("mono8", "yuv422"),
        ("bgr8", "bayer_rggb8"),
        ("rgb8", "no_such_encoding"),
        ("bayer_bggr8", "bgra8"),
    ],
)
def test_impossible_conversions_raise(encoding, desired):
    msg = cv2_to_imgmsg(random_image(encoding), encoding)
    with pytest.raises(ImageConversionError):
        imgmsg_to_cv2(msg, desired)


@pytest.mark.parametrize(
    ("arr", "encoding"),
    [
        (np.zeros((4, 4, 3), np.uint8), "rgba8"),
        (np.zeros((4, 4), np.uint8), "mono16"),
        (np.zeros((4, 4, 3), np.uint16), "bgr8"),
        (np.zeros((4, 4, 2), np.uint8), "8UC3"),
        (np.zeros((4, 5, 2), np.uint8), "yuv422"),  # odd width
        (np.zeros((4, 4), np.bool_), "passthrough"),
        (np.zeros((4, 4), np.int64), "passthrough"),
        (np.zeros((4, 4, 513), np.uint8), "passthrough"),
        (np.zeros(16, np.uint8), "mono8"),
        (np.zeros((0, 4), np.uint8), "mono8"),
        ([[1, 2], [3, 4]], "mono8"),
        (np.zeros((4, 4, 3), np.uint8), "rgb9"),
    ],
)
def test_cv2_to_imgmsg_refuses_mismatched_arrays(arr, encoding):
    with pytest.raises(ImageConversionError):
        cv2_to_imgmsg(arr, encoding)
    if encoding != "rgb9":
        with pytest.raises(ImageConversionError):
            to_rosbags_image(arr, encoding, typestore=TYPESTORE)


# --------------------------------------------------------------------------- bad messages


def good_fields(**changes):
    arr = random_image("rgb8")
    msg = namespace_msg(arr, "rgb8")
    for key, value in changes.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    "changes",
    [
        {"data": b"\0" * (H * W * 3 - 1)},  # shorter than step * height
        {"step": W * 3 - 1},  # shorter than a row
        {"step": W * 3 + 4},  # padding claimed but not sent
        {"encoding": "rgb9"},
        {"encoding": None},
        {"width": 0},
        {"height": 0},
        {"width": -1},
        {"height": -8},
        {"step": -24},
        {"height": 2.0},
        {"width": "8"},
        {"height": True},
        {"height": 2**40},
        {"is_bigendian": 2},
        {"is_bigendian": None},
        {"data": None},
        {"data": "abc" * 64},
        {"data": list(range(200))},
        {"data": 12345},
        {"data": np.zeros(H * W * 3, np.float32)},
        {"data": array.array("H", [0] * (H * W * 3))},
    ],
    ids=repr,
)
def test_bad_image_messages_raise_image_conversion_error(changes):
    with pytest.raises(ImageConversionError):
        imgmsg_to_cv2(good_fields(**changes))
    with pytest.raises(ImageConversionError):
        to_rgb8(good_fields(**changes))


def test_odd_width_yuv422_message_raises():
    msg = SimpleNamespace(height=2, width=3, encoding="yuv422", is_bigendian=0, step=6, data=bytes(12))
    with pytest.raises(ImageConversionError, match="even"):
        imgmsg_to_cv2(msg)


def test_missing_fields_say_which_message_was_expected():
    compressed = cv2_to_compressed_imgmsg(random_image("bgr8"), "png")
    with pytest.raises(ImageConversionError, match="compressed_imgmsg_to_cv2"):
        imgmsg_to_cv2(compressed)
    with pytest.raises(ImageConversionError, match="imgmsg_to_cv2"):
        compressed_imgmsg_to_cv2(cv2_to_imgmsg(random_image("bgr8"), "bgr8"))
    with pytest.raises(ImageConversionError):
        to_rgb8(object())


def test_numpy_integer_fields_are_accepted():
    arr = random_image("mono16")
    msg = namespace_msg(arr, "mono16", height=np.uint32(H), width=np.int64(W), step=np.uint32(W * 2))
    msg.is_bigendian = np.uint8(0)
    np.testing.assert_array_equal(imgmsg_to_cv2(msg), arr)


# --------------------------------------------------------------------------- compressed


def photo_like(height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth BGR image that JPEG keeps close."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 5 % 256, y * 7 % 256, (x + y) * 3 % 256]).astype(np.uint8)


@pytest.mark.parametrize("dst_format", ["jpg", "jpeg", ".JPG"])
def test_jpeg_round_trip_is_close(dst_format):
    bgr = photo_like()
    msg = cv2_to_compressed_imgmsg(bgr, dst_format)
    assert type(msg) is CompressedImage and msg.format == "jpeg"
    assert bytes(msg.data[:2]) == b"\xff\xd8"
    out = compressed_imgmsg_to_cv2(msg)
    assert out.shape == bgr.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - bgr).mean() < 3
    rgb = compressed_imgmsg_to_cv2(msg, "rgb8")
    np.testing.assert_array_equal(rgb, out[..., ::-1])


def test_jpeg_quality_changes_the_size():
    bgr = random_image("bgr8", 32, 32)
    small = cv2_to_compressed_imgmsg(bgr, "jpg", quality=10)
    large = cv2_to_compressed_imgmsg(bgr, "jpg", quality=100)
    assert len(small.data) < len(large.data)


@pytest.mark.parametrize("encoding", ["bgr8", "bgra8", "mono8", "mono16", "bgr16", "bgra16"])
def test_png_round_trip_is_exact(encoding):
    arr = random_image(encoding)
    msg = cv2_to_compressed_imgmsg(arr, "png", png_compression=9)
    assert msg.format == "png" and bytes(msg.data[1:4]) == b"PNG"
    out = compressed_imgmsg_to_cv2(msg)
    assert out.dtype == arr.dtype and out.shape == arr.shape  # mono stays HxW, 16 bits stay 16
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg, encoding), arr)


def test_compressed_desired_encodings():
    mono16 = random_image("mono16")
    msg = cv2_to_compressed_imgmsg(mono16, "png")
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg, "mono8"), np.rint(mono16 / 257.0))
    bgr = random_image("bgr8")
    msg = cv2_to_compressed_imgmsg(bgr, "png")
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg, "rgb8"), bgr[..., ::-1])
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg, "mono8"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def compressed(fmt: str, payload: np.ndarray):
    return SimpleNamespace(header=imaging.HeaderMsg(), format=fmt, data=payload.tobytes())


def test_format_string_says_what_the_pixels_are():
    rgb = random_image("rgb8")
    # compressed_image_transport converts rgb8 to bgr8 before encoding and says so in the format
    png = cv2.imencode(".png", rgb[..., ::-1])[1]
    msg = compressed("rgb8; png compressed bgr8", png)
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg, "rgb8"), rgb)
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg), rgb[..., ::-1])
    np.testing.assert_array_equal(to_rgb8(msg), rgb)
    # a generic source stays generic: 16UC1 depth is not a colour image
    depth = random_image("16UC1")
    msg = compressed("16UC1; png compressed ", cv2.imencode(".png", depth)[1])
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg), depth)
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg, "8UC1"), np.rint(depth / 257.0))
    with pytest.raises(ImageConversionError):
        compressed_imgmsg_to_cv2(msg, "rgb8")
    # the same pixels with a bare format are mono16, which converts to colour
    assert compressed_imgmsg_to_cv2(compressed("png", cv2.imencode(".png", depth)[1]), "rgb8").shape == (
        H,
        W,
        3,
    )
    # a target that does not match the decoded layout is ignored
    bgr = random_image("bgr8")
    msg = compressed("mono8; jpeg compressed mono8", cv2.imencode(".png", bgr)[1])
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg, "rgb8"), bgr[..., ::-1])


def depth_payload(png: np.ndarray, quant_a: float = 0.0, quant_b: float = 0.0) -> np.ndarray:
    """compressed_depth_image_transport layout: int32 format, float32 depthParam[2], then the PNG."""
    return np.frombuffer(struct.pack("<iff", 0, quant_a, quant_b) + png.tobytes(), np.uint8)


def test_compressed_depth_16uc1():
    depth = random_image("16UC1")
    msg = compressed("16UC1; compressedDepth png", depth_payload(cv2.imencode(".png", depth)[1]))
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(msg), depth)
    legacy = compressed("16UC1; compressedDepth", depth_payload(cv2.imencode(".png", depth)[1]))
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(legacy), depth)


def test_compressed_depth_32fc1_inverse_depth():
    depth_z0, depth_max = 100.0, 10.0  # compressed_depth_image_transport's defaults
    quant_a = np.float32(depth_z0 * (depth_z0 + 1.0))
    quant_b = np.float32(1.0 - quant_a / depth_max)
    rng = np.random.default_rng(5)
    depth = rng.uniform(0.5, 9.0, size=(H, W)).astype(np.float32)
    depth[0, 0] = 12.0  # beyond depth_max: sent as 0, read back as NaN
    inv = np.where(depth < depth_max, quant_a / depth + quant_b, 0).astype(np.uint16)
    msg = compressed("32FC1; compressedDepth png", depth_payload(cv2.imencode(".png", inv)[1], quant_a, quant_b))
    out = compressed_imgmsg_to_cv2(msg)
    assert out.dtype == np.float32 and out.shape == (H, W)
    assert np.isnan(out[0, 0])
    np.testing.assert_allclose(out.ravel()[1:], depth.ravel()[1:], atol=0.03)


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("jpeg", b""),
        ("jpeg", b"\xff\xd8 this is not a jpeg"),
        ("png", bytes(range(256)) * 4),
        ("png", None),
        ("png", [1, 2, 3]),
        (None, b"\x89PNG"),
        ("32FC1; compressedDepth png", b"\0" * 12),
        ("32FC1; compressedDepth rvl", b"\0" * 64),
        ("bgr8; compressedDepth png", b"\0" * 64),
    ],
    ids=repr,
)
def test_corrupt_compressed_messages_raise(fmt, data):
    msg = SimpleNamespace(header=imaging.HeaderMsg(), format=fmt, data=data)
    with pytest.raises(ImageConversionError):
        compressed_imgmsg_to_cv2(msg)
    with pytest.raises(ImageConversionError):
        to_rgb8(msg)


@pytest.mark.parametrize(
    ("arr", "dst_format"),
    [
        (np.zeros((4, 4), np.uint16), "jpg"),  # OpenCV would silently drop to 8 bits
        (np.zeros((4, 4, 4), np.uint8), "jpg"),
        (np.zeros((4, 4), np.float32), "png"),
        (np.zeros((4, 4), np.uint16), "bmp"),  # BMP holds 8 bits only
        (np.zeros((4, 4, 3), np.uint8), "webp2"),
        ("not an image", "png"),
    ],
)
def test_cv2_to_compressed_imgmsg_refuses_what_it_cannot_store(arr, dst_format):
    with pytest.raises(ImageConversionError):
        cv2_to_compressed_imgmsg(arr, dst_format)


def test_jpeg_quality_is_checked():
    with pytest.raises(ImageConversionError):
        cv2_to_compressed_imgmsg(random_image("bgr8"), "jpg", quality=101)


# --------------------------------------------------------------------------- rosbags messages


def test_rosbags_messages_decode_through_the_same_code():
    bgr = photo_like()
    header = RB_HEADER(stamp=RB_TIME(sec=12, nanosec=345), frame_id="camera")
    raw = rosbags_roundtrip(to_rosbags_image(bgr, "bgr8", header, TYPESTORE))
    assert isinstance(raw, RB_IMAGE) and isinstance(raw.data, np.ndarray)
    assert raw.header.frame_id == "camera" and stamp_ns(raw.header) == 12_000_000_345
    np.testing.assert_array_equal(imgmsg_to_cv2(raw), bgr)
    np.testing.assert_array_equal(to_rgb8(raw), bgr[..., ::-1])
    png = rosbags_roundtrip(to_rosbags_compressed_image(bgr, "png", header, TYPESTORE))
    assert isinstance(png, RB_COMPRESSED) and png.format == "png"
    np.testing.assert_array_equal(compressed_imgmsg_to_cv2(png), bgr)
    np.testing.assert_array_equal(to_rgb8(png), bgr[..., ::-1])
    jpg = rosbags_roundtrip(to_rosbags_compressed_image(bgr, "jpg", typestore=TYPESTORE, quality=90))
    assert jpg.format == "jpeg" and stamp_ns(jpg) == 0
    assert np.abs(to_rgb8(jpg).astype(int) - bgr[..., ::-1]).mean() < 3


def test_rosbags_image_built_by_hand_with_padding_and_big_endian():
    arr = random_image("mono16")
    rows = arr.astype(">u2").view(np.uint8).reshape(H, -1)
    data = np.concatenate([rows, np.zeros((H, 6), np.uint8)], axis=1).ravel()
    msg = RB_IMAGE(
        header=RB_HEADER(stamp=RB_TIME(sec=1, nanosec=2), frame_id="f"),
        height=H,
        width=W,
        encoding="mono16",
        is_bigendian=1,
        step=W * 2 + 6,
        data=data,
    )
    np.testing.assert_array_equal(imgmsg_to_cv2(rosbags_roundtrip(msg)), arr)


def test_to_rosbags_image_default_typestore_and_foreign_header():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 3, 4
    msg = to_rosbags_image(random_image("mono8"), "mono8", header)
    assert msg.__msgtype__ == "sensor_msgs/msg/Image"
    assert msg.header.frame_id == "cam" and stamp_ns(msg) == 3_000_000_004


# --------------------------------------------------------------------------- message building


def test_cv2_to_imgmsg_assigns_a_byte_container_never_a_list_or_ndarray():
    class RecordingImage(Image):
        """A real rclpy Image that remembers what was assigned to ``data``."""

        @property
        def data(self):
            return Image.data.fget(self)

        @data.setter
        def data(self, value):
            self.__dict__.setdefault("assigned", []).append(type(value))
            Image.data.fset(self, value)

    frame = random_image("bgr8", 720, 1280)
    msg = cv2_to_imgmsg(frame, "bgr8", msg_type=RecordingImage)
    assert msg.assigned[-1] is array.array  # rclpy stores an array.array as it is
    assert not {np.ndarray, list, tuple} & set(msg.assigned)
    assert msg.step == 1280 * 3 and len(msg.data) == frame.nbytes
    np.testing.assert_array_equal(imgmsg_to_cv2(msg), frame)
    checked = cv2_to_imgmsg(frame, "bgr8", msg_type=functools.partial(Image, check_fields=True))
    assert type(checked.data) is array.array and len(checked.data) == frame.nbytes
    fallback = cv2_to_imgmsg(frame, "bgr8", msg_type=ImageMsg)
    assert type(fallback.data) is bytes and fallback.data == frame.tobytes()


def test_plain_dataclasses_when_sensor_msgs_is_missing(monkeypatch):
    messages._message_class.cache_clear()
    monkeypatch.setitem(sys.modules, "sensor_msgs.msg", None)  # import now fails
    try:
        arr = random_image("rgba8")
        msg = cv2_to_imgmsg(arr, "rgba8")
        assert type(msg) is imaging.ImageMsg and type(msg.data) is bytes
        np.testing.assert_array_equal(imgmsg_to_cv2(msg), arr)
        cmsg = cv2_to_compressed_imgmsg(arr, "png")
        assert type(cmsg) is imaging.CompressedImageMsg and cmsg.format == "png"
        np.testing.assert_array_equal(compressed_imgmsg_to_cv2(cmsg), arr)
    finally:
        messages._message_class.cache_clear()


def test_headers_are_copied_or_rebuilt():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 5, 6
    msg = cv2_to_imgmsg(random_image("mono8"), "mono8", header)
    assert msg.header == header
    rb_header = RB_HEADER(stamp=RB_TIME(sec=7, nanosec=8), frame_id="rb")
    msg = cv2_to_imgmsg(random_image("mono8"), "mono8", rb_header)
    assert type(msg.header) is Header and msg.header.frame_id == "rb" and stamp_ns(msg) == 7_000_000_008
    cmsg = cv2_to_compressed_imgmsg(random_image("mono8"), "png", header=rb_header)
    assert type(cmsg.header) is Header and stamp_ns(cmsg.header) == 7_000_000_008
    with pytest.raises(ImageConversionError):
        cv2_to_imgmsg(random_image("mono8"), "mono8", header="not a header")


def test_stamp_ns():
    header = Header()
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 999_999_999
    assert stamp_ns(header) == 1_700_000_000_999_999_999
    assert stamp_ns(header.stamp) == 1_700_000_000_999_999_999
    assert stamp_ns(RB_HEADER(stamp=RB_TIME(sec=2, nanosec=1), frame_id="")) == 2_000_000_001
    assert stamp_ns(imaging.HeaderMsg(imaging.TimeMsg(3, 4))) == 3_000_000_004
    with pytest.raises(ImageConversionError):
        stamp_ns(object())


# --------------------------------------------------------------------------- to_rgb8 and CvBridge


@pytest.mark.parametrize(
    "encoding",
    ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "8UC3", "8UC1", "16UC1", "8UC4"],
)
def test_to_rgb8_from_raw_images(encoding):
    arr = random_image(encoding)
    out = to_rgb8(cv2_to_imgmsg(arr, encoding))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    source = bridge._RGB8_SOURCE_GUESS.get(encoding, encoding)
    expected = imgmsg_to_cv2(cv2_to_imgmsg(arr, source), "rgb8")
    np.testing.assert_array_equal(out, expected)
    if encoding == "8UC3":
        np.testing.assert_array_equal(out, arr[..., ::-1])  # OpenCV order


def test_to_rgb8_from_yuv_bayer_and_compressed():
    bgr = smooth_bgr()
    yuv = cv2_to_imgmsg(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUY2), "yuyv")
    assert np.abs(to_rgb8(yuv).astype(int) - bgr[..., ::-1]).max() <= 3
    flat = np.broadcast_to(np.array([10, 20, 30], np.uint8), (8, 8, 3)).copy()
    bayer = to_rgb8(cv2_to_imgmsg(mosaic(flat, "gbrg"), "bayer_gbrg8"))
    np.testing.assert_array_equal(bayer[2:6, 2:6], flat[2:6, 2:6, ::-1])
    mono_png = cv2_to_compressed_imgmsg(random_image("mono8"), "png")
    assert to_rgb8(mono_png).shape == (H, W, 3)
    with pytest.raises(ImageConversionError):
        to_rgb8(cv2_to_imgmsg(random_image("32FC1"), "32FC1"))


def test_cv_bridge_class_is_a_drop_in():
    bridge = CvBridge()
    bgr = random_image("bgr8")
    msg = bridge.cv2_to_imgmsg(bgr, "bgr8")
    np.testing.assert_array_equal(bridge.imgmsg_to_cv2(msg, "rgb8"), bgr[..., ::-1])
    np.testing.assert_array_equal(bridge.compressed_imgmsg_to_cv2(bridge.cv2_to_compressed_imgmsg(bgr, "png")), bgr)
    assert bridge.encoding_to_dtype_with_channels("mono16") == (np.dtype(np.uint16), 1)
    assert bridge.encoding_to_cvtype2("bgr8") == cv2.CV_8UC3
    assert bridge.encoding_to_cvtype2("32FC1") == cv2.CV_32FC1
    assert bridge.dtype_with_channels_to_cvtype2(np.dtype(np.int16), 2) == cv2.CV_16SC2
    assert bridge.cvtype2_to_dtype_with_channels(cv2.CV_64FC4) == (np.dtype(np.float64), 4)
    with pytest.raises(ImageConversionError):
        bridge.imgmsg_to_cv2(msg, "rgba16x")


# --------------------------------------------------------------------------- backend selection


STAND_IN = '''
"""Stand-in for the real cv_bridge (a C++ build that cannot be installed off-robot)."""
calls = []


def cvtColor2(img, encoding_in, encoding_out):
    calls.append((encoding_in, encoding_out))
    if (encoding_in, encoding_out) == ("bgr8", "rgb8"):
        return img[..., ::-1].copy()
    raise RuntimeError(f"stand-in cannot convert {encoding_in} to {encoding_out}")
'''


@pytest.fixture
def stand_in_cv_bridge(tmp_path, monkeypatch):
    package = tmp_path / "cv_bridge"
    (package / "boost").mkdir(parents=True)
    (package / "__init__.py").write_text("class CvBridgeError(TypeError):\n    pass\n")
    (package / "boost" / "__init__.py").write_text("")
    (package / "boost" / "cv_bridge_boost.py").write_text(textwrap.dedent(STAND_IN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(imaging.FORCE_BUILTIN_ENV, raising=False)
    monkeypatch.setattr(conversion, "_real_cvtcolor_cache", conversion._UNSET)
    yield
    for name in ("cv_bridge.boost.cv_bridge_boost", "cv_bridge.boost", "cv_bridge"):
        sys.modules.pop(name, None)


def test_real_cv_bridge_is_used_and_its_errors_wrapped(stand_in_cv_bridge, monkeypatch):
    assert imaging.bridge_backend() == "cv_bridge"
    from cv_bridge.boost import cv_bridge_boost

    bgr = random_image("bgr8")
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(bgr, "bgr8"), "rgb8"), bgr[..., ::-1])
    assert cv_bridge_boost.calls == [("bgr8", "rgb8")]
    packed = cv2.cvtColor(smooth_bgr(), cv2.COLOR_BGR2YUV_UYVY)
    with pytest.raises(ImageConversionError, match="cv_bridge could not convert") as caught:
        imgmsg_to_cv2(cv2_to_imgmsg(packed, "uyvy"), "bgr8")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert cv_bridge_boost.calls[-1] == ("yuv422", "bgr8")  # the spelling every cv_bridge knows
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(bgr, "bgr8")), bgr)  # passthrough: no call
    assert len(cv_bridge_boost.calls) == 2

    monkeypatch.setenv(imaging.FORCE_BUILTIN_ENV, "1")
    assert imaging.bridge_backend() == "builtin"
    out = imgmsg_to_cv2(cv2_to_imgmsg(packed, "uyvy"), "bgr8")
    np.testing.assert_array_equal(out, cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_UYVY))
    assert len(cv_bridge_boost.calls) == 2
    monkeypatch.delenv(imaging.FORCE_BUILTIN_ENV)
    monkeypatch.setattr(imaging, "force_builtin_bridge", True)
    assert imaging.bridge_backend() == "builtin"


def test_builtin_backend_without_cv_bridge(monkeypatch):
    monkeypatch.setattr(conversion, "_real_cvtcolor_cache", conversion._UNSET)
    monkeypatch.setitem(sys.modules, "cv_bridge", None)
    assert imaging.bridge_backend() == "builtin"


def test_module_imports_neither_rclpy_nor_cv2():
    code = "import sys, dli_perception.core.imaging; print(sorted({'rclpy', 'cv2', 'sensor_msgs'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- property tests

JUNK_SIZES = st.sampled_from([0, -1, -8, 2**32, 2**40, 1.5, None, "4", True])
JUNK_DATA = st.sampled_from([None, "text", [1, 2, 3], 7, np.zeros(4, np.float32)])
CONTAINERS = [bytes, bytearray, lambda b: np.frombuffer(b, np.uint8), lambda b: array.array("B", b)]


@st.composite
def image_fields(draw):
    """Mostly consistent Image fields, some nudged off by a few bytes, some replaced by junk."""
    encoding = draw(st.sampled_from([*sorted(ENCODINGS), "", "rgb9"]))
    info = encoding_table._known(encoding) or encoding_info("mono8")
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    row = width * info.channels * info.dtype.itemsize
    step = max(0, row + draw(st.sampled_from([0, 0, 0, 1, 3, -1])))
    size = max(0, step * height + draw(st.sampled_from([0, 0, 0, 2, -1, -5])))
    data = draw(st.sampled_from(CONTAINERS))(draw(st.binary(min_size=size, max_size=size)))
    fields = {
        "height": height,
        "width": width,
        "step": step,
        "encoding": encoding,
        "is_bigendian": draw(st.booleans()),
        "data": data,
    }
    if draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(sorted(fields)))
        junk = {"data": JUNK_DATA, "encoding": st.sampled_from([None, 3, "RGB8"]), "is_bigendian": st.just(2)}
        fields[name] = draw(junk.get(name, JUNK_SIZES))
    return fields


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=image_fields(),
    desired=st.sampled_from(["passthrough", "rgb8", "bgr8", "mono8", "mono16", "8UC1", "32FC1", "bgra16", "x"]),
)
def test_any_image_fields_give_an_image_or_image_conversion_error(fields, desired):
    msg = SimpleNamespace(**fields)
    try:
        out = imgmsg_to_cv2(msg, desired)
    except ImageConversionError:
        return
    assert isinstance(out, np.ndarray)
    assert out.shape[:2] == (fields["height"], fields["width"])
    if desired == "passthrough":
        info = encoding_info(fields["encoding"])
        assert out.dtype == info.dtype and (out.shape[2] if out.ndim == 3 else 1) == info.channels


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "16UC1; compressedDepth png", "", "x; y"]),
    data=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: cv2.imencode(".png", np.zeros((2, 3), np.uint8))[1].tobytes()[:-5] + b),
    ),
    desired=st.sampled_from(["passthrough", "rgb8", "mono16", "8UC3"]),
)
def test_any_compressed_bytes_give_an_image_or_image_conversion_error(fmt, data, desired):
    msg = SimpleNamespace(format=fmt, data=data)
    try:
        out = compressed_imgmsg_to_cv2(msg, desired)
    except ImageConversionError:
        return
    assert isinstance(out, np.ndarray) and out.size > 0
