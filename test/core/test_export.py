"""Model directory export: real ONNX export, onnx.checker, ONNX Runtime vs torch, report files, atomicity."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from dli_perception.core import export as E  # noqa: E402
from dli_perception.core import report as R  # noqa: E402
from dli_perception.core import training as T  # noqa: E402
from dli_perception.core.modeldir import load_metadata  # noqa: E402
from dli_perception.core.preprocess import PreprocessConfig, preprocess_batch  # noqa: E402
from dli_perception.errors import ConfigError, ModelError  # noqa: E402

CLASSES = ("cyan", "magenta", "yellow")


def make_image_folder(root: Path, per_class: int = 10) -> Path:
    """Three classes told apart by colour and shape: filled circles, squares and crosses."""
    rng = np.random.default_rng(1)
    colours = [(255, 255, 0), (255, 0, 255), (0, 255, 255)]  # BGR
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(110, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
            cx, cy, r = (int(v) for v in rng.integers(22, 42, 3))
            r = r // 3 + 6
            if label == 0:
                cv2.circle(img, (cx, cy), r, colours[label], -1)
            elif label == 1:
                cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colours[label], -1)
            else:
                cv2.line(img, (cx - r, cy), (cx + r, cy), colours[label], 5)
                cv2.line(img, (cx, cy - r), (cx, cy + r), colours[label], 5)
            assert cv2.imwrite(str(root / name / f"{i:02d}.jpg"), img)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: one thread is faster than two spinning ones
    try:
        root = make_image_folder(tmp_path_factory.mktemp("images"))
        config = T.TrainConfig(
            mode="head",
            weights="none",
            epochs=12,
            lr=0.05,
            batch_size=8,
            num_workers=0,
            val_fraction=0.3,
            early_stop_patience=0,
            preprocess=PreprocessConfig(size=64),
        )
        result = T.train(root, config)
        out = E.export_model_dir(result, tmp_path_factory.mktemp("models") / "model")
        yield result, out, root
    finally:
        torch.set_num_threads(threads)


def test_exported_directory_is_complete_and_self_describing(trained):
    result, out, _ = trained
    meta = load_metadata(out)
    assert meta.classes == list(CLASSES) == result.classes
    assert meta.preprocess == PreprocessConfig(size=64) and meta.input_shape == [-1, 3, 64, 64]
    assert (meta.backbone, meta.weights_source, meta.opset) == ("resnet18", "none", 18)
    assert meta.onnx_sha256 == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert meta.dataset["sha256"] == result.dataset.sha256 and meta.dataset["counts"] == {c: 10 for c in CLASSES}
    assert meta.metrics["best_val_acc"] == result.best_val_acc and set(meta.metrics["per_class"]) == set(CLASSES)
    assert meta.training["config"]["mode"] == "head" and len(meta.training["history"]) == 12
    assert {"torch", "torchvision", "onnx", "onnxruntime", "dli_perception"} <= set(meta.versions)
    assert dt.datetime.fromisoformat(meta.created).tzinfo is not None
    assert (out / "labels.txt").read_text().splitlines() == list(CLASSES)
    json.loads((out / "metadata.json").read_text())  # strict JSON (no NaN/Infinity)
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    mask = E._umask()
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # not the private mode of a temp dir
    assert (out / "report" / "per_class.md").stat().st_mode & 0o777 == 0o666 & ~mask


def test_onnx_passes_checker_and_matches_torch_on_real_images(trained):
    result, out, root = trained
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 18

    images = [T.read_rgb(p) for p in sorted(root.rglob("*.jpg"))]
    batch = preprocess_batch(images, result.preprocess)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = result.model(torch.from_numpy(batch)).numpy()
    for size in (1, 5, len(images)):  # dynamic batch axis
        (got,) = session.run(["logits"], {"input": batch[:size]})
        np.testing.assert_allclose(got, expected[:size], atol=1e-4, rtol=1e-3)
        assert np.array_equal(got.argmax(1), expected[:size].argmax(1))
    assert (expected.argmax(1) == np.repeat(np.arange(3), 10)).mean() > 0.6  # it learned something

    model = E.load_checkpoint_model(out)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(batch)).numpy(), expected, atol=1e-5, rtol=1e-5)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["classes"] == list(CLASSES)


def test_report_files_are_real_images_and_tables(trained):
    _, out, _ = trained
    for name in ("training_curves.png", "confusion_matrix.png"):
        image = cv2.imread(str(out / "report" / name))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 200
        assert image.std() > 10  # not a blank canvas
    rows = list(csv.reader((out / "report" / "per_class.csv").open()))
    assert rows[0] == ["class", "precision", "recall", "f1", "support"]
    assert [r[0] for r in rows[1:]] == list(CLASSES)
    md = (out / "report" / "per_class.md").read_text()
    assert all(f"| {c} |" in md for c in CLASSES)


def test_report_functions_refuse_bad_input(tmp_path):
    with pytest.raises(ConfigError):
        R.plot_training_curves([], tmp_path / "c.png")
    with pytest.raises(ConfigError, match="3 classes"):
        R.plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "m.png")
    path = R.plot_confusion_matrix([[5, 1], [0, 0]], ["a", "b"], tmp_path / "m.png")  # a class without support
    assert cv2.imread(str(path)) is not None


class Noisy(torch.nn.Module):
    """Adds fresh random numbers on every call: ONNX Runtime cannot agree with torch."""

    def forward(self, x):
        return x.mean(dim=(2, 3)) + torch.rand(x.shape[0], 3)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def existing_model_dir(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    files = {"model.onnx": b"old model", "labels.txt": b"a\nb\n", "metadata.json": b"{}"}
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_onnx_that_disagrees_with_torch_is_refused_and_the_old_dir_kept(tmp_path):
    out = tmp_path / "model"
    before = existing_model_dir(out)
    with pytest.raises(ModelError, match="differs from torch"):
        E.export_model_dir(Noisy(), out, classes=["a", "b", "c"], preprocess=PreprocessConfig(size=16))
    assert contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the temp build dir is gone


def test_wrong_opset_is_refused_and_the_old_dir_kept(tmp_path):
    out = tmp_path / "model"
    before = existing_model_dir(out)
    pre = PreprocessConfig(size=16)
    with pytest.raises(ConfigError, match="opset"):
        E.export_model_dir(Tiny(), out, classes=["a", "b", "c"], preprocess=pre, opset=16)
    with pytest.raises(ModelError, match="opset"):  # the exporter silently keeps 18: caught by the check
        E.export_model_dir(Tiny(), out, classes=["a", "b", "c"], preprocess=pre, opset=99)
    assert contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_unwritable_destination_and_bad_arguments(tmp_path, trained):
    result, _, _ = trained
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(ModelError, match="cannot write model directory"):
        E.export_model_dir(
            Tiny(), tmp_path / "file" / "model", classes=["a", "b", "c"], preprocess=PreprocessConfig(size=16)
        )
    with pytest.raises(ConfigError, match="classes"):
        E.export_model_dir(Tiny(), tmp_path / "m")
    with pytest.raises(ModelError, match="2 classes"):
        E.export_model_dir(Tiny(), tmp_path / "m", classes=["a", "b"], preprocess=PreprocessConfig(size=16))
    cancelled = T.TrainResult(**{**result.__dict__, "status": "cancelled"})
    with pytest.raises(ConfigError, match="cancelled"):
        E.export_model_dir(cancelled, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_load_checkpoint_model_refuses_inconsistent_dirs(tmp_path, trained):
    _, out, _ = trained
    with pytest.raises(ModelError):
        E.load_checkpoint_model(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("metadata.json", "labels.txt"):
        (broken / name).write_bytes((out / name).read_bytes())
    with pytest.raises(ModelError, match="checkpoint.pt is missing"):
        E.load_checkpoint_model(broken)
    (broken / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot be loaded with weights_only=True"):
        E.load_checkpoint_model(broken)


# -- precision variants ---------------------------------------------------------------------------
def test_export_writes_precision_variants_checked_on_the_validation_split(trained):
    result, out, root = trained
    meta = load_metadata(out)
    v = meta.variants
    assert set(v) == {"fp32", "int8_qdq", "fp16"}
    assert v["fp32"]["exporter"] == "dynamo" and v["fp32"]["sha256"] == meta.onnx_sha256
    assert v["fp32"]["val_images"] == 9 and v["fp32"]["dataset"] == str(root.resolve())  # 30 % of 3 x 10
    assert v["int8_qdq"]["calibration_images"] == 21  # every training image: fewer than 64
    for name in ("int8_qdq", "fp16"):
        info = v[name]
        assert info["check_data"] == "validation" and info["val_images"] == 9
        accepted = info["agreement"] >= 0.98
        assert info["status"] == ("accepted" if accepted else "refused")
        assert (out / info["file"]).is_file() == accepted
        if accepted:
            assert info["sha256"] == hashlib.sha256((out / info["file"]).read_bytes()).hexdigest()
    # the FP16 file keeps float32 input/output, loads in ONNX Runtime on the CPU and agrees with fp32
    proto = onnx.load(str(out / "model.fp16.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    images = [T.read_rgb(p) for p in sorted(root.rglob("*.jpg"))]
    batch = preprocess_batch(images, result.preprocess)
    fp32 = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": batch}
    )[0]
    fp16 = ort.InferenceSession(str(out / "model.fp16.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": batch}
    )[0]
    assert fp16.dtype == np.float32 and (fp16.argmax(1) == fp32.argmax(1)).mean() >= 0.98


def _export_small(result, out, **kwargs):
    return E.export_model_dir(
        result.model,
        out,
        classes=list(CLASSES),
        preprocess=result.preprocess,
        backbone="resnet18",
        report=False,
        variants=(),
        **kwargs,
    )


def _agrees_with_torch(result, out, root) -> None:
    images = [T.read_rgb(p) for p in sorted(root.rglob("*.jpg"))[:8]]
    batch = preprocess_batch(images, result.preprocess)
    (got,) = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"input": batch}
    )
    with torch.no_grad():
        expected = result.model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
    assert load_metadata(out).variants["fp32"]["status"] == "accepted"


def test_torchscript_exporter_forced_by_environment(trained, tmp_path, monkeypatch, caplog):
    result, _, root = trained
    monkeypatch.setenv(E.EXPORTER_ENV, "torchscript")
    with caplog.at_level("INFO", logger="dli_perception.core.export"):
        out = _export_small(result, tmp_path / "ts")
    assert load_metadata(out).variants["fp32"]["exporter"] == "torchscript"
    assert "ONNX written by the torchscript exporter" in caplog.text
    _agrees_with_torch(result, out, root)


def test_torchscript_fallback_when_the_dynamo_exporter_fails(trained, tmp_path, monkeypatch, caplog):
    result, _, root = trained

    def broken_dynamo(*_args, **_kwargs):  # what an old torch or a missing onnxscript amounts to
        raise RuntimeError("torch.export is not available in this torch")

    monkeypatch.setattr(E, "_export_dynamo", broken_dynamo)
    with caplog.at_level("INFO", logger="dli_perception.core.export"):
        out = _export_small(result, tmp_path / "fallback")
    assert load_metadata(out).variants["fp32"]["exporter"] == "torchscript"
    assert "dynamo ONNX exporter unavailable (RuntimeError: torch.export is not available" in caplog.text
    _agrees_with_torch(result, out, root)
    with pytest.raises(ModelError, match="torch.export is not available"):  # dynamo asked for explicitly
        _export_small(result, tmp_path / "forced", exporter="dynamo")
    with pytest.raises(ConfigError, match="exporter"):
        _export_small(result, tmp_path / "bad", exporter="jit")
    assert not (tmp_path / "forced").exists() and not (tmp_path / "bad").exists()
