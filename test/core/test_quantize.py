"""Precision variants: INT8 Q/DQ calibrated and checked against fp32, FP16, added atomically, served by auto.

Real onnxruntime quantization and sessions on small real model directories (the nearest-colour
ONNX model of test/fixtures_models.py) and real image folders.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_models import build_colour_model_dir  # noqa: E402

from dli_perception.core import variant_build as VB  # noqa: E402
from dli_perception.core import variants as V  # noqa: E402
from dli_perception.core.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from dli_perception.core.backends.quantize import quantize_qdq  # noqa: E402
from dli_perception.core.backends.select import create_backend  # noqa: E402
from dli_perception.core.modeldir import METADATA_FILE, load_metadata  # noqa: E402
from dli_perception.core.preprocess import PreprocessConfig, preprocess_batch  # noqa: E402
from dli_perception.errors import ConfigError, ModelError  # noqa: E402

onnx = pytest.importorskip("onnx")

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 210)}
# Two greys 3 levels apart, plus black and white so calibration must cover the whole range:
# 8-bit activations cannot keep the greys apart, so INT8 disagrees with fp32 near their boundary.
CLOSE = {"black": (0, 0, 0), "grey_a": (128, 128, 128), "grey_b": (131, 128, 128), "white": (255, 255, 255)}


def _noisy(rgb, seed: int, h: int = 40, w: int = 48, spread: int = 25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(np.asarray(rgb, np.int16) + rng.integers(-spread, spread + 1, (h, w, 3)), 0, 255)
    return img.astype(np.uint8)


def _write(root: Path, name: str, i: int, rgb: np.ndarray) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / name / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    for name, rgb in COLOURS.items():
        for i in range(10):
            _write(root, name, i, _noisy(rgb, i))
    return root


@pytest.fixture(scope="module")
def close_dataset(tmp_path_factory) -> Path:
    """grey_a images with means spread over [126.5, 129.4], grey_b over [129.6, 132.5]: many near the boundary."""
    root = tmp_path_factory.mktemp("close")
    rng = np.random.default_rng(3)
    for i in range(20):
        _write(root, "black", i, _noisy((0, 0, 0), i, spread=2))
        _write(root, "white", i, _noisy((255, 255, 255), i, spread=2))
        for name, lo, hi in (("grey_a", 126.5, 129.4), ("grey_b", 129.6, 132.5)):
            red = rng.uniform(lo, hi)
            img = np.full((40, 48, 3), 128, np.uint8)
            n_up = int(round((red - int(red)) * img[..., 0].size))
            flat = np.full(img[..., 0].size, int(red), np.uint8)
            flat[:n_up] += 1
            img[..., 0] = rng.permutation(flat).reshape(40, 48)
            _write(root, name, i, img)
    return root


@pytest.fixture
def colour_dir(tmp_path) -> Path:
    return build_colour_model_dir(tmp_path / "colour", classes=list(COLOURS), colours=COLOURS)


def test_qdq_model_has_quantize_dequantize_pairs_and_per_channel_weights(colour_dir, colour_dataset, tmp_path):
    cfg = PreprocessConfig(size=32)
    frames = [_noisy(rgb, 50 + i) for i, rgb in enumerate(COLOURS.values())]
    out = quantize_qdq(colour_dir / "model.onnx", [preprocess_batch(frames, cfg)], tmp_path / "q.onnx")
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 3, ops
    assert list(tmp_path.glob(".quant-*")) == [], "no temp files are left behind"
    with pytest.raises(ModelError, match="no calibration images"):
        quantize_qdq(colour_dir / "model.onnx", [], tmp_path / "none.onnx")


def test_add_variants_writes_checked_int8_and_fp16_and_auto_serves_int8(colour_dir, colour_dataset):
    entries = VB.add_variants(colour_dir, dataset=colour_dataset)
    assert {k: e["status"] for k, e in entries.items()} == {
        "fp32": "accepted",
        "int8_qdq": "accepted",
        "fp16": "accepted",
    }
    meta = load_metadata(colour_dir)
    for name in (V.INT8_QDQ, V.FP16):
        info = meta.variants[name]
        assert (colour_dir / info["file"]).is_file()
        assert info["agreement"] >= V.AGREEMENT_THRESHOLD and info["val_images"] == 6  # 20 % of 3 x 10
        assert info["check_data"] == "validation" and info["threshold"] == V.AGREEMENT_THRESHOLD
    assert meta.variants[V.INT8_QDQ]["calibration_images"] == 24 and meta.variants[V.INT8_QDQ]["accuracy"] == 1.0
    assert meta.variants[V.FP32]["accuracy"] == 1.0
    assert not list(colour_dir.glob(".variants-*")), "the temp dir is removed"

    frames = [_noisy(rgb, 100 + i) for i, rgb in enumerate(COLOURS.values())]
    backend, report = create_backend(colour_dir, "onnxruntime")  # precision auto by default
    with backend:
        assert (backend.variant, backend.precision, report.variant) == ("int8_qdq", "int8", "int8_qdq")
        assert "serving int8_qdq" in report.variant_reason and "agreement" in report.variant_reason
        assert [p.label for p in backend.classify(frames)] == list(COLOURS)
    with OnnxRuntimeBackend.load(colour_dir, precision="fp32") as fp32:
        assert fp32.variant == "fp32" and [p.label for p in fp32.classify(frames)] == list(COLOURS)


def test_int8_below_the_agreement_threshold_is_refused_and_fp32_serves(tmp_path, close_dataset, caplog):
    model = build_colour_model_dir(tmp_path / "close", classes=list(CLOSE), colours=CLOSE, sharpness=50.0)
    entries = VB.add_variants(model, dataset=close_dataset)
    int8 = entries[V.INT8_QDQ]
    assert int8["status"] == V.REFUSED, int8
    assert int8["agreement"] < V.AGREEMENT_THRESHOLD and "below the 98 % required" in int8["reason"]
    assert not (model / "model.int8.onnx").exists() and "sha256" not in int8
    assert load_metadata(model).variants[V.INT8_QDQ]["status"] == V.REFUSED
    with caplog.at_level(logging.INFO, logger="dli_perception.core.backends"):
        backend, report = create_backend(model, "onnxruntime", precision="auto")
    with backend:
        assert backend.variant == "fp32" and backend.precision == "fp32"
        assert "int8_qdq: the int8_qdq variant was refused at export" in report.variant_reason
    assert "refused" in caplog.text


def test_old_model_dir_without_variants_serves_fp32_and_says_how_to_add_them(colour_dir, caplog):
    with caplog.at_level(logging.INFO, logger="dli_perception.core.backends"):
        backend, report = create_backend(colour_dir, "onnxruntime")
    with backend:
        assert backend.variant == "fp32"
        assert "no precision variants" in report.variant_reason and "dli-perception export" in report.variant_reason
    assert "dli-perception export MODEL_DIR" in caplog.text


@pytest.mark.parametrize("damage", ["missing", "corrupt", "unloadable"])
def test_missing_or_corrupt_int8_variant_falls_back_to_fp32_with_the_reason(colour_dir, colour_dataset, damage):
    VB.add_variants(colour_dir, dataset=colour_dataset, which=[V.INT8_QDQ])
    path = colour_dir / "model.int8.onnx"
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(path.read_bytes()[:-100])
    else:  # bytes that match the recorded sha256 but that onnxruntime refuses
        path.write_bytes(b"not an onnx model")
        raw = json.loads((colour_dir / METADATA_FILE).read_text())
        raw["variants"]["int8_qdq"]["sha256"] = VB.sha256_file(path)
        (colour_dir / METADATA_FILE).write_text(json.dumps(raw))
    backend, report = create_backend(colour_dir, "auto")
    with backend:
        assert backend.variant == "fp32"
        expected = {"missing": "is missing", "corrupt": "does not match metadata.json", "unloadable": "cannot run"}
        assert expected[damage] in report.variant_reason
        assert backend.classify([_noisy(COLOURS["green"], 9)])[0].label == "green"


def test_explicit_int8_without_a_variant_still_serves(colour_dir):
    with OnnxRuntimeBackend.load(colour_dir, precision="int8") as backend:
        assert backend.variant == "fp32" and "precision=int8" in backend.variant_reason


def test_a_crash_before_metadata_is_written_leaves_the_directory_as_it_was(colour_dir, colour_dataset, monkeypatch):
    before = (colour_dir / METADATA_FILE).read_bytes()

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VB, "atomic_write_text", disk_full)
    with pytest.raises(ModelError, match="No space left"):
        VB.add_variants(colour_dir, dataset=colour_dataset)
    assert (colour_dir / METADATA_FILE).read_bytes() == before
    assert not list(colour_dir.glob(".variants-*"))
    with OnnxRuntimeBackend.load(colour_dir) as backend:  # the new files are not listed: fp32 serves
        assert backend.variant == "fp32"


def test_without_a_dataset_int8_is_skipped_and_fp16_is_checked_on_random_inputs(colour_dir):
    entries = VB.add_variants(colour_dir)
    assert entries[V.INT8_QDQ]["status"] == V.SKIPPED and "--dataset" in entries[V.INT8_QDQ]["reason"]
    assert entries[V.FP16]["status"] == V.ACCEPTED and entries[V.FP16]["check_data"] == "random"


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"precision": "int4"}, "precision"),
        ({"precision": "int8", "device": "cuda"}, "CPU provider"),
        ({"calibration_dir": "/x"}, "calibration_dir"),
    ],
)
def test_configuration_errors(colour_dir, opts, message):
    with pytest.raises(ConfigError, match=message):
        OnnxRuntimeBackend.load(colour_dir, **opts)
