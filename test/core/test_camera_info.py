"""Camera intrinsics from the field of view and from camera_calibration YAML files."""

from __future__ import annotations

import math

import pytest

from dli_perception.core.camera_info import load_calibration, pinhole_from_fov, scaled
from dli_perception.errors import ConfigError

CALIB = """\
image_width: 640
image_height: 480
camera_name: jetbot
camera_matrix: {rows: 3, cols: 3, data: [500.0, 0.0, 320.0, 0.0, 505.0, 240.0, 0.0, 0.0, 1.0]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [-0.3, 0.1, 0.0, 0.0, 0.0]}
rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}
projection_matrix: {rows: 3, cols: 4, data: [480.0, 0, 320.0, 0, 0, 490.0, 240.0, 0, 0, 0, 1, 0]}
"""


def test_pinhole_from_fov():
    intr = pinhole_from_fov(640, 480, 90.0)
    assert intr.k[0] == pytest.approx(320.0) and intr.k[4] == pytest.approx(320.0)
    assert (intr.k[2], intr.k[5]) == (320.0, 240.0)
    assert intr.p[:3] == intr.k[:3] and len(intr.p) == 12
    narrow = pinhole_from_fov(640, 480, 62.2)
    assert narrow.k[0] == pytest.approx(320 / math.tan(math.radians(31.1)))


def test_load_and_scale_calibration(tmp_path):
    path = tmp_path / "cam.yaml"
    path.write_text(CALIB)
    intr = load_calibration(path)
    assert intr.k[0] == 500.0 and intr.d[0] == -0.3 and intr.p[5] == 490.0
    half = scaled(intr, 320, 240)
    assert half.k[0] == 250.0 and half.k[2] == 160.0 and half.k[4] == 252.5 and half.p[0] == 240.0


@pytest.mark.parametrize(
    "text",
    ["image_width: 640\n", CALIB.replace("[500.0, 0.0, 320.0,", "[500.0,"), "{not yaml: [", "- a list\n"],
)
def test_bad_calibration_files_are_refused(tmp_path, text):
    path = tmp_path / "cam.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_calibration(path)


def test_missing_file_and_bad_fov():
    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration("/nonexistent/cam.yaml")
    with pytest.raises(ConfigError):
        pinhole_from_fov(640, 480, 0.0)
