"""INT8 ONNX Runtime: quantised from calibration images, cached by content, same answers as fp32."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_backends import COLOURS, build_model_dir

from dli_perception.core.backends.onnxruntime import OnnxRuntimeBackend
from dli_perception.core.backends.select import create_backend
from dli_perception.errors import ConfigError


def _solid_noisy(rgb, seed, h=60, w=80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(np.asarray(rgb, np.int16) + rng.integers(-25, 26, (h, w, 3)), 0, 255)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def calibration_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(4):
            cv2.imwrite(str(root / name / f"{i}.png"), cv2.cvtColor(_solid_noisy(rgb, i), cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_model_dir(tmp_path_factory.mktemp("m") / "rgb")


def test_int8_agrees_with_fp32_and_is_cached(model_dir, calibration_set, tmp_path):
    frames = [_solid_noisy(rgb, 100 + i) for i, rgb in enumerate(COLOURS.values())]
    fp32 = OnnxRuntimeBackend.load(model_dir, device="cpu")
    int8 = OnnxRuntimeBackend.load(
        model_dir, precision="int8", calibration_dir=calibration_set, int8_cache_dir=tmp_path
    )
    assert int8.precision == "int8" and fp32.precision == "fp32"
    cached = list(tmp_path.glob("*.int8.onnx"))
    assert len(cached) == 1
    assert [p.label for p in int8.classify(frames)] == [p.label for p in fp32.classify(frames)] == list(COLOURS)
    mtime = cached[0].stat().st_mtime_ns
    again = OnnxRuntimeBackend.load(model_dir, precision="int8", calibration_dir=calibration_set, int8_cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == mtime, "a cached INT8 model is reused, not rebuilt"
    assert [p.label for p in again.classify(frames)] == list(COLOURS)


def test_new_calibration_images_give_a_new_cache_entry(model_dir, calibration_set, tmp_path):
    OnnxRuntimeBackend.load(model_dir, precision="int8", calibration_dir=calibration_set, calibration_images=3,
                            int8_cache_dir=tmp_path)
    OnnxRuntimeBackend.load(model_dir, precision="int8", calibration_dir=calibration_set, calibration_images=6,
                            int8_cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.int8.onnx"))) == 2


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"precision": "int8"}, "calibration_dir"),
        ({"precision": "int4"}, "precision"),
        ({"precision": "int8", "calibration_dir": "/nonexistent", "device": "cuda"}, "CPU provider"),
    ],
)
def test_int8_configuration_errors(model_dir, opts, message):
    with pytest.raises(ConfigError, match=message):
        OnnxRuntimeBackend.load(model_dir, **opts)


def test_auto_passes_int8_to_onnxruntime(model_dir, calibration_set, tmp_path):
    backend, report = create_backend(
        model_dir, "auto", precision="int8", calibration_dir=str(calibration_set), int8_cache_dir=str(tmp_path)
    )
    assert report.chosen == "onnxruntime" and backend.precision == "int8"
