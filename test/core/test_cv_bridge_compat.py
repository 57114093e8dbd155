"""cv_bridge compatibility: cv_bridge's own Python tests through the ``cv_bridge`` stand-in, and ours.

The upstream tests (vision_opencv ``cv_bridge/test/{conversions,enumerants,python_bindings}.py``)
are not part of this repository. Point ``DLI_CV_BRIDGE_TESTS`` at a folder holding a copy and
:func:`test_upstream_cv_bridge_tests_pass_through_the_stand_in` runs them, in a child process with
``dli_perception/compat`` on the path so that ``import cv_bridge`` is the stand-in. NumPy 2 has no
``ndarray.tostring``: the copies run here read it as ``.tobytes()``, the one change made to them.

The tests below it check each behaviour those upstream tests rely on, and never skip.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image

from dli_perception.compat import shim_dir
from dli_perception.core.imaging import (
    CvBridge,
    compressed_imgmsg_to_cv2,
    cv2_to_compressed_imgmsg,
    cv2_to_imgmsg,
    encoding_info,
    imgmsg_to_cv2,
    to_rosbags_image,
)
from dli_perception.core.imaging.cvtypes import MAX_CHANNELS, cv_type_layout
from dli_perception.core.imaging.display import cvt_color_for_display, label_colors
from dli_perception.core.imaging.encoding_table import cv_type
from dli_perception.core.imaging.formats import CODECS, MAX_DECODED_PIXELS
from dli_perception.errors import CvBridgeError, ImageConversionError

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_ENV = "DLI_CV_BRIDGE_TESTS"
UPSTREAM_FILES = ("conversions.py", "enumerants.py", "python_bindings.py")
UPSTREAM_TEST_COUNT = 7  # rolling: 4 in conversions.py, 2 in enumerants.py, 1 in python_bindings.py
DEPTH_CONSTANTS = {"8U": cv2.CV_8U, "8S": cv2.CV_8S, "16U": cv2.CV_16U, "16S": cv2.CV_16S,
                   "32S": cv2.CV_32S, "32F": cv2.CV_32F, "64F": cv2.CV_64F}  # fmt: skip


def _shim_env() -> dict[str, str]:
    path = os.pathsep.join([str(shim_dir()), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}


# --------------------------------------------------------------------------- upstream tests


def _upstream_dir() -> Path | None:
    value = os.environ.get(UPSTREAM_ENV, "").strip()
    return Path(value) if value else None


# The upstream files are not part of this package (no vendored test code), and CI has no network to
# fetch them: the runner below exists only when a copy is named, instead of showing as a skip that CI
# would have to allow. README "cv_bridge compatibility" says how to run it.
def _upstream_cv_bridge_tests_pass_through_the_stand_in(tmp_path):
    source = _upstream_dir()
    missing = [name for name in UPSTREAM_FILES if not (source / name).is_file()]
    assert not missing, f"{UPSTREAM_ENV}={source} lacks {missing}"
    for name in UPSTREAM_FILES:  # NumPy 2 removed ndarray.tostring; tobytes returns the same bytes
        text = (source / name).read_text().replace(".tostring()", ".tobytes()")
        (tmp_path / name).write_text(text)
    report = tmp_path / "report.xml"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         f"--junitxml={report}", *UPSTREAM_FILES],
        cwd=tmp_path, env=_shim_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    cases = ET.parse(report).getroot().iter("testcase")
    outcome = {f"{c.get('classname')}.{c.get('name')}": [child.tag for child in c] for c in cases}
    passed = [name for name, problems in outcome.items() if not problems]
    assert len(outcome) == UPSTREAM_TEST_COUNT, (outcome, out.stdout[-3000:])
    assert len(passed) == UPSTREAM_TEST_COUNT, (outcome, out.stdout[-5000:])
    assert out.returncode == 0, out.stdout[-3000:]


if _upstream_dir() is not None:
    test_upstream_cv_bridge_tests_pass_through_the_stand_in = pytest.mark.slow(
        _upstream_cv_bridge_tests_pass_through_the_stand_in
    )


# --------------------------------------------------------------------------- the stand-in module


def test_stand_in_is_importable_as_cv_bridge_only_from_its_folder():
    script = textwrap.dedent(
        """
        import importlib.util, sys
        import cv_bridge
        from dli_perception.core import imaging
        from dli_perception.core.imaging import display, encoding_table
        assert cv_bridge.IS_DLI_PERCEPTION_SHIM
        assert cv_bridge.CvBridge is imaging.CvBridge and cv_bridge.CvBridgeError is imaging.CvBridgeError
        assert cv_bridge.getCvType is encoding_table.cv_type
        assert cv_bridge.cvtColorForDisplay is display.cvt_color_for_display
        assert importlib.util.find_spec("cv_bridge.boost") is None
        # the converter does not take the stand-in for the real C++ extension
        assert imaging.bridge_backend() == "builtin"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], env=_shim_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    # Without the folder on the path, the installed package provides no top-level cv_bridge.
    plain = {**os.environ, "PYTHONPATH": str(REPO)}
    probe = "import importlib.util as u; s = u.find_spec('cv_bridge'); print(s.origin if s else None)"
    out = subprocess.run([sys.executable, "-c", probe], env=plain, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "dli_perception" not in out.stdout, out.stdout


def test_python_m_dli_perception_compat_prints_the_folder():
    out = subprocess.run([sys.executable, "-m", "dli_perception.compat"], env=_shim_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and Path(out.stdout.strip()) == shim_dir()
    assert (shim_dir() / "cv_bridge" / "__init__.py").is_file()


# --------------------------------------------------------------------------- more than 4 channels


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 5), (np.int16, 7), (np.float64, 16), (np.uint8, 512)])
def test_generic_images_with_more_than_four_channels_round_trip(dtype, channels):
    rng = np.random.default_rng(channels)
    arr = (rng.standard_normal((5, 6, channels)) * 100).astype(dtype)
    msg = cv2_to_imgmsg(arr)
    depth = {np.uint8: "8U", np.int16: "16S", np.float64: "64F"}[dtype]
    assert msg.encoding == f"{depth}C{channels}" and type(msg) is Image
    assert msg.step == 6 * channels * np.dtype(dtype).itemsize
    out = imgmsg_to_cv2(msg)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    assert encoding_info(f"{depth}c{channels}").channels == channels  # any case, like the other names
    np.testing.assert_array_equal(imgmsg_to_cv2(cv2_to_imgmsg(arr, f"{depth}C{channels}")), arr)


def test_more_channels_than_opencv_allows_are_refused():
    with pytest.raises(CvBridgeError, match="512"):
        cv2_to_imgmsg(np.zeros((2, 2, MAX_CHANNELS + 1), np.uint8))
    with pytest.raises(CvBridgeError):
        encoding_info("8UC513")
    with pytest.raises(CvBridgeError):  # the encoding must still match the array
        cv2_to_imgmsg(np.zeros((2, 2, 5), np.uint8), "8UC6")
    with pytest.raises(CvBridgeError):  # and colour conversions still need a colour encoding
        imgmsg_to_cv2(cv2_to_imgmsg(np.zeros((2, 2, 5), np.uint8)), "bgr8")


# --------------------------------------------------------------------------- compressed formats


_LOSSLESS_FORMATS = ["png", "bmp", "dib", "ras", "sr", "tif", "tiff"]


@pytest.mark.parametrize("fmt", _LOSSLESS_FORMATS + ["jpg", "jpeg", "jpe"])
@pytest.mark.parametrize("shape", [(30, 41), (30, 41, 1), (30, 41, 3)])
def test_every_opencv_format_round_trips_mono_and_colour(fmt, shape):
    rng = np.random.default_rng(len(shape))
    if fmt in ("jpg", "jpeg", "jpe"):  # smooth content, so the lossy codec stays close
        ramp = np.linspace(0, 255, shape[0] * shape[1]).reshape(shape[:2])
        arr = np.repeat(ramp[..., None], shape[2] if len(shape) == 3 else 1, axis=2).reshape(shape).astype(np.uint8)
    else:
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
    msg = cv2_to_compressed_imgmsg(arr, fmt)
    assert msg.format == CODECS[fmt].name
    out = compressed_imgmsg_to_cv2(msg)
    assert out.dtype == np.uint8 and out.shape == (shape if len(shape) != 3 or shape[2] != 1 else shape[:2])
    if fmt in _LOSSLESS_FORMATS:
        np.testing.assert_array_equal(out, arr.reshape(out.shape))
    else:
        assert np.abs(out.astype(int) - arr.reshape(out.shape)).mean() < 3


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_tiff_keeps_deep_images_exactly(dtype):
    arr = (np.random.default_rng(1).standard_normal((9, 7, 3)) * 1000).astype(dtype)
    out = CvBridge().compressed_imgmsg_to_cv2(CvBridge().cv2_to_compressed_imgmsg(arr, "tiff"))
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    ("arr", "fmt"),
    [(np.zeros((4, 4), np.uint16), "bmp"), (np.zeros((4, 4, 4), np.uint8), "ras"), (np.zeros((4, 4, 2), np.uint8), "tif"),
     (np.zeros((4, 4), np.float32), "sr"), (np.zeros((4, 4, 3), np.uint8), "gif")],
)  # fmt: skip
def test_layouts_a_format_would_change_are_refused(arr, fmt):
    with pytest.raises(CvBridgeError):
        cv2_to_compressed_imgmsg(arr, fmt)


def _huge_headers() -> dict[str, bytes]:
    side = 60000  # 3.6 G pixels
    bmp = bytearray(cv2.imencode(".bmp", np.zeros((2, 2, 3), np.uint8))[1].tobytes())
    bmp[18:26] = struct.pack("<ii", side, -side)
    ras = bytearray(cv2.imencode(".ras", np.zeros((2, 2, 3), np.uint8))[1].tobytes())
    ras[4:12] = struct.pack(">II", side, side)
    tiff = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 256, 4, 1, side) + struct.pack("<HHII", 257, 4, 1, side) + b"\0" * 64
    return {"bmp": bytes(bmp), "ras": bytes(ras), "tiff": tiff}


@pytest.mark.parametrize("fmt", ["bmp", "ras", "tiff"])
def test_huge_declared_sizes_are_refused_before_decoding(fmt):
    data = _huge_headers()[fmt]
    msg = CvBridge().cv2_to_compressed_imgmsg(np.zeros((2, 2), np.uint8), "png")
    msg.format, msg.data = fmt, data
    with pytest.raises(CvBridgeError, match="MAX_DECODED_PIXELS"):
        compressed_imgmsg_to_cv2(msg)
    assert 60000 * 60000 > MAX_DECODED_PIXELS


# --------------------------------------------------------------------------- byte order


@pytest.mark.parametrize("order", [">", "<"])
def test_an_arrays_byte_order_is_kept_and_flagged(order):
    values = np.random.default_rng(2).integers(-(2**20), 2**20, (30, 40))
    arr = values.astype(np.dtype(np.int32).newbyteorder(order))
    msg = cv2_to_imgmsg(arr)
    assert msg.is_bigendian == (order == ">")
    assert bytes(msg.data) == arr.tobytes()  # the bytes as given, not swapped to host order
    out = imgmsg_to_cv2(msg)
    assert out.dtype.isnative and out.dtype == np.int32
    np.testing.assert_array_equal(out, values)
    rosbags_msg = to_rosbags_image(arr.astype(np.float64).astype(">f8"), "64FC1",
                                   typestore=get_typestore(Stores.ROS2_HUMBLE))  # fmt: skip
    assert rosbags_msg.is_bigendian == 1
    np.testing.assert_array_equal(imgmsg_to_cv2(rosbags_msg), values.astype(np.float64))


def test_single_byte_and_native_arrays_say_host_order():
    assert cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8)).is_bigendian == (sys.byteorder == "big")
    assert cv2_to_imgmsg(np.zeros((2, 2), np.uint16)).is_bigendian == (sys.byteorder == "big")


# --------------------------------------------------------------------------- OpenCV type numbers


def test_cv_type_of_generic_names_and_bare_depths_matches_opencv():
    for depth, number in DEPTH_CONSTANTS.items():
        assert cv_type(depth) == cv2.CV_MAKETYPE(number, 1)
        for channels in (1, 2, 3, 4, 5, 64, 128):  # 128: the most OpenCV 5 types hold (OpenCV 4: 512)
            assert cv_type(f"{depth}C{channels}") == cv2.CV_MAKETYPE(number, channels)
            assert cv_type_layout(cv2.CV_MAKETYPE(number, channels)) == (encoding_info(f"{depth}C1").dtype, channels)
    assert cv_type("32FC4") == cv2.CV_32FC4 != cv2.CV_8UC4


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("bgr8", cv2.CV_8UC3), ("rgba16", cv2.CV_16UC4), ("mono16", cv2.CV_16UC1), ("bayer_grbg8", cv2.CV_8UC1),
     ("yuv422", cv2.CV_8UC2), ("yuv422_yuy2", cv2.CV_8UC2)],
)  # fmt: skip
def test_cv_type_of_colour_encodings(encoding, expected):
    assert cv_type(encoding) == expected
    assert CvBridge().encoding_to_cvtype2(encoding) == expected


@pytest.mark.parametrize("bad", ["8", "8UC", "8UC0", "8UC513", "16F", "rgb9", "", None])
def test_cv_type_refuses_other_names(bad):
    with pytest.raises(CvBridgeError):
        cv_type(bad)


# --------------------------------------------------------------------------- display conversion


def _grid_labels() -> np.ndarray:
    labels = np.full((60, 80), -1, np.int32)
    for k in range(12):
        row, col = divmod(k, 4)
        labels[row * 20 : row * 20 + 15, col * 20 : col * 20 + 15] = k * 7 + 1
    return labels


def test_label_image_shows_one_distinct_colour_per_label_and_black_background():
    labels = _grid_labels()
    bgr = cvt_color_for_display(labels, "32SC1", "bgr8")
    assert bgr.dtype == np.uint8 and bgr.shape == (60, 80, 3)
    assert (bgr[labels == -1] == 0).all()
    colours = {}
    for value in np.unique(labels[labels != -1]):
        pixels = bgr[labels == value]
        assert (pixels == pixels[0]).all(), f"label {value} is not one colour"
        colours[int(value)] = tuple(pixels[0])
    assert len(set(colours.values())) == len(colours)
    assert all(min(c) == 0 and max(c) == 255 for c in colours.values())  # saturated: visible on black
    # the same label has the same colour in another image, and the colour does not depend on the others
    assert tuple(cvt_color_for_display(np.full((2, 2), 8, np.int32), "32SC1", "bgr8")[0, 0]) == colours[8]
    np.testing.assert_array_equal(label_colors(np.array([8]))[0], colours[8])
    # rgb8 output is the same colours in the other channel order
    np.testing.assert_array_equal(cvt_color_for_display(labels, "32SC1", "rgb8"), bgr[..., ::-1])
    # another background label
    assert (cvt_color_for_display(labels, "32SC1", "bgr8", bg_label=8)[labels == 8] == 0).all()


def test_depth_image_scales_its_range_to_0_255_and_marks_nan_black():
    depth = np.tile(np.linspace(0.5, 4.5, 81, dtype=np.float32), (10, 1))
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    gray = cvt_color_for_display(depth, "32FC1", "mono8", do_dynamic_scaling=True)
    assert gray.dtype == np.uint8 and gray.shape == depth.shape
    assert gray[1, 0] == 0 and gray[1, -1] == 255 and gray[1, 40] == 128
    assert (np.diff(gray[1].astype(int)) >= 0).all()
    bgr = cvt_color_for_display(depth, "32FC1", "bgr8", min_image_value=0.5, max_image_value=4.5)
    assert bgr.shape == (10, 81, 3) and (bgr[1:, :, 0] == bgr[1:, :, 2]).all()  # grey
    np.testing.assert_array_equal(bgr[1:, :, 0], gray[1:])
    jet = cvt_color_for_display(depth, "32FC1", "bgr8", do_dynamic_scaling=True, colormap=cv2.COLORMAP_JET)
    assert (jet[0, 0] == 0).all()  # NaN is black
    assert jet[1, 0, 0] > jet[1, 0, 2] and jet[1, -1, 2] > jet[1, -1, 0]  # near blue, far red
    flat = cvt_color_for_display(np.full((3, 4), 2.0, np.float32), "32FC1", "bgr8", do_dynamic_scaling=True)
    assert flat.shape == (3, 4, 3) and (flat == 128).all()
    with pytest.raises(CvBridgeError, match="do_dynamic_scaling"):
        cvt_color_for_display(depth, "32FC1", "bgr8")  # no range: nothing to map to 0-255


def test_colour_and_16_bit_images_convert_for_display():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cvt_color_for_display(rgb, "rgb8", "bgr8"), rgb[..., ::-1])
    same = cvt_color_for_display(rgb, "", "bgr8")  # a generic 8UC3 is taken as bgr8 and returned as is
    np.testing.assert_array_equal(same, rgb)
    mono16 = rng.integers(0, 65536, (6, 8), dtype=np.uint16)
    shown = cvt_color_for_display(mono16, "16UC1", "")
    assert shown.shape == (6, 8, 3) and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown[..., 1], np.rint(mono16 / 257.0).astype(np.uint8))


@pytest.mark.parametrize(
    ("image", "encoding_in", "encoding_out", "kwargs"),
    [(np.zeros((4, 4, 3), np.uint8), "bgr8", "bgr16", {}), (np.zeros((4, 4, 3), np.uint8), "bgr8", "yuv422", {}),
     (np.arange(48, dtype=np.float32).reshape(4, 4, 3), "32FC3", "bgr8", {"do_dynamic_scaling": True}),
     (np.zeros((4, 4), np.float64), "64FC1", "", {}), (np.zeros((4, 4), np.uint8), "rgb8", "bgr8", {}),
     ([[1, 2]], "mono8", "bgr8", {}), (np.zeros((4, 4), np.float32), "32FC1", "bgr8", {"max_image_value": 1.0,
     "colormap": 99})],
)  # fmt: skip
def test_display_conversion_refuses_what_it_cannot_show(image, encoding_in, encoding_out, kwargs):
    with pytest.raises(ImageConversionError):
        cvt_color_for_display(image, encoding_in, encoding_out, **kwargs)
