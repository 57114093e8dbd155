"""Inference backends on real model directories: ONNX Runtime vs PyTorch, auto selection, refused models."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from dli_perception.core.backends import Backend, create_backend, softmax
from dli_perception.core.backends.onnxruntime import OnnxRuntimeBackend, plan_providers
from dli_perception.core.backends.select import split_options
from dli_perception.core.backends.tensorrt import TensorRTBackend, tensorrt_availability
from dli_perception.core.backends.torch_backend import TorchBackend
from dli_perception.core.fsutil import sha256_file
from dli_perception.core.modeldir import (
    CHECKPOINT_FILE,
    LABELS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    ModelMetadata,
    model_checkpoint,
    write_metadata_files,
)
from dli_perception.core.preprocess import PreprocessConfig, preprocess_batch
from dli_perception.errors import BackendUnavailableError, ConfigError, ModelError

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("onnxruntime")

CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
SIZE = 64
needs_no_tensorrt = pytest.mark.skipif(
    tensorrt_availability().available, reason="TensorRT and a GPU are usable here: auto would pick tensorrt"
)


def _solid(colour, h=48, w=64) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()


def build_model_dir(dest: Path, classes=CLASSES, size: int = SIZE, seed: int = 0) -> Path:
    """A real model directory: resnet18 whose head is fitted so solid red/green/blue frames get their class."""
    dest.mkdir(parents=True)
    cfg = PreprocessConfig(size=size)
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=len(classes)).eval()
    # Fit the head (least squares on the pooled features) so each colour's frame maps to its class.
    head = model.fc
    model.fc = torch.nn.Identity()
    frames = [_solid(COLOURS.get(c, (i * 80 % 256, 128, 200))) for i, c in enumerate(classes)]
    with torch.no_grad():
        feats = model(torch.from_numpy(preprocess_batch(frames, cfg))).double()
        target = 6.0 * torch.eye(len(classes), dtype=torch.float64) - 3.0
        weight = torch.linalg.lstsq(feats, target).solution.T
        head.weight.copy_(weight.float())
        head.bias.zero_()
    model.fc = head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(dest / ONNX_FILE),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=18,
            dynamo=False,
        )
    meta = ModelMetadata(classes=list(classes), preprocess=cfg, onnx_sha256=sha256_file(dest / ONNX_FILE))
    torch.save(model_checkpoint(model.state_dict(), meta), dest / CHECKPOINT_FILE)
    write_metadata_files(dest, meta)
    return dest


def clone(src: Path, dest: Path) -> Path:
    """Copy of a model dir whose unchanged files are hard links (replace files with :func:`replace`)."""
    dest.mkdir()
    for f in src.iterdir():
        try:
            os.link(f, dest / f.name)
        except OSError:
            shutil.copy2(f, dest / f.name)
    return dest


def replace(path: Path, data: bytes | str) -> None:
    """Write a new file in place of a possibly hard-linked one (never modifies the shared inode)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def edit_metadata(model_dir: Path, **changes) -> None:
    meta = json.loads((model_dir / METADATA_FILE).read_text())
    meta.update(changes)
    meta.pop("num_classes", None)
    replace(model_dir / METADATA_FILE, json.dumps(meta))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("models") / "rgb")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    solid = [_solid(COLOURS[c], h, w) for c, (h, w) in zip(CLASSES, [(48, 64), (120, 90), (64, 64)], strict=False)]
    noise = [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(2)]
    ramp = np.dstack([np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (60, 1))] * 3)
    return solid + noise + [ramp]


@pytest.fixture(scope="module")
def ort_backend(model_dir):
    backend = OnnxRuntimeBackend.load(model_dir, device="cpu", intra_op_threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def torch_backend(model_dir):
    backend = TorchBackend.load(model_dir, device="cpu")
    yield backend
    backend.close()


# -- agreement and output contract ------------------------------------------------------------
def test_onnxruntime_and_torch_agree(ort_backend, torch_backend, frames):
    batch = preprocess_batch(frames, ort_backend.metadata.preprocess)
    p_ort = ort_backend.infer(batch)
    p_torch = torch_backend.infer(batch)
    assert p_ort.shape == p_torch.shape == (len(frames), len(CLASSES))
    np.testing.assert_allclose(p_ort, p_torch, atol=1e-4)
    np.testing.assert_array_equal(p_ort.argmax(1), p_torch.argmax(1))
    # the fitted head makes the solid frames land on their own colour, so top-1 really varies
    assert [CLASSES[i] for i in p_ort.argmax(1)[:3]] == CLASSES


@pytest.mark.parametrize("fixture", ["ort_backend", "torch_backend"])
def test_classify_names_the_colour(request, fixture, frames):
    backend: Backend = request.getfixturevalue(fixture)
    preds = backend.classify(frames)
    assert [p.label for p in preds[:3]] == CLASSES
    probs = backend.infer(preprocess_batch(frames, backend.metadata.preprocess))
    for pred, row in zip(preds, probs, strict=False):
        assert pred.index == int(np.argmax(row)) and pred.label == CLASSES[pred.index]
        assert pred.score == pytest.approx(float(row[pred.index]))
        np.testing.assert_allclose(pred.probs, row, atol=1e-6)
    assert backend.classify([]) == []


@pytest.mark.parametrize("fixture", ["ort_backend", "torch_backend"])
@pytest.mark.parametrize("n", [1, 5])
def test_probabilities_sum_to_one(request, fixture, n):
    backend: Backend = request.getfixturevalue(fixture)
    batch = np.random.default_rng(n).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)
    probs = backend.infer(batch)
    assert probs.dtype == np.float32 and probs.shape == (n, len(CLASSES))
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_softmax_is_stable_for_large_logits():
    probs = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(probs, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)


@pytest.mark.parametrize(
    "batch, match",
    [
        (np.zeros((1, 3, SIZE, SIZE), np.float64), "float32"),
        (np.zeros((1, 3, SIZE + 1, SIZE), np.float32), "shape"),
        (np.zeros((3, SIZE, SIZE), np.float32), "shape"),
        (np.zeros((0, 3, SIZE, SIZE), np.float32), "empty"),
        ([[0.0]], "numpy"),
    ],
)
def test_bad_batches_are_refused(ort_backend, batch, match):
    with pytest.raises(ConfigError, match=match):
        ort_backend.infer(batch)


def test_non_contiguous_batch_is_accepted(ort_backend):
    base = np.random.default_rng(0).normal(size=(4, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(ort_backend.infer(base[::2]), ort_backend.infer(base[[0, 2]]), atol=1e-6)


def test_io_binding_gives_the_same_result(model_dir, ort_backend):
    batch = np.random.default_rng(3).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    with OnnxRuntimeBackend.load(model_dir, device="cpu", io_binding=True) as bound:
        np.testing.assert_allclose(bound.infer(batch), ort_backend.infer(batch), atol=1e-6)


def test_thread_pools_sleep_between_runs_unless_asked_to_spin(model_dir, ort_backend):
    """Spinning workers would keep a core busy after every frame, away from the node's other threads."""
    keys = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
    opts = ort_backend._session.get_session_options()
    assert [opts.get_session_config_entry(k) for k in keys] == ["0", "0"]
    batch = np.random.default_rng(4).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)
    with OnnxRuntimeBackend.load(model_dir, device="cpu", intra_op_threads=1, spin=True) as spinning:
        opts = spinning._session.get_session_options()
        assert [opts.get_session_config_entry(k) for k in keys] == ["1", "1"]
        np.testing.assert_allclose(spinning.infer(batch), ort_backend.infer(batch), atol=1e-6)


def test_properties_warmup_and_close(model_dir):
    backend = OnnxRuntimeBackend.load(model_dir, device="cpu")
    assert backend.name == "onnxruntime" and backend.device == "cpu" and backend.precision == "fp32"
    assert backend.classes == CLASSES and backend.metadata.preprocess.size == SIZE
    assert backend.providers == ["CPUExecutionProvider"]
    backend.warmup(2, batch_size=2)
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendUnavailableError, match="closed"):
        backend.infer(np.zeros((1, 3, SIZE, SIZE), np.float32))


# -- selection -----------------------------------------------------------------------------
@needs_no_tensorrt
def test_auto_picks_onnxruntime_and_says_why_tensorrt_was_skipped(model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="dli_perception.core.backends"):
        backend, report = create_backend(model_dir, "auto", intra_op_threads=1)
    with backend:
        assert isinstance(backend, OnnxRuntimeBackend)
        assert report.chosen == "onnxruntime" and report.device == "cpu" and report.precision == "fp32"
        assert list(report.skipped) == ["tensorrt"]
        assert "TensorRT" in report.skipped["tensorrt"]
        assert [a.backend for a in report.attempts] == ["tensorrt", "onnxruntime"]
        assert "skipped tensorrt" in report.summary()
    assert "skipping tensorrt" in caplog.text and "backend=onnxruntime" in caplog.text


def test_auto_routes_options_to_the_backends_that_know_them():
    routed = split_options("auto", {"precision": "fp16", "intra_op_threads": 2, "device": "cpu"})
    assert routed["tensorrt"] == {"precision": "fp16", "device": "cpu"}
    assert routed["onnxruntime"] == {"precision": "fp16", "intra_op_threads": 2, "device": "cpu"}
    assert routed["torch"] == {"device": "cpu"}
    with pytest.raises(ConfigError, match="intra_op_treads"):
        split_options("auto", {"intra_op_treads": 2})
    with pytest.raises(ConfigError, match="max_batch"):
        split_options("onnxruntime", {"max_batch": 8})


def test_explicit_torch_backend(model_dir, frames):
    backend, report = create_backend(model_dir, "torch", device="cpu")
    with backend:
        assert isinstance(backend, TorchBackend) and report.chosen == "torch" and report.skipped == {}
        assert [p.label for p in backend.classify(frames[:3])] == CLASSES


@needs_no_tensorrt
def test_forcing_tensorrt_here_is_refused_with_what_to_install(model_dir):
    with pytest.raises(BackendUnavailableError, match="tensorrt backend cannot run here.*install"):
        create_backend(model_dir, "tensorrt")
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        TensorRTBackend.load(model_dir)
    with pytest.raises(BackendUnavailableError, match="GPU only"):
        TensorRTBackend.load(model_dir, device="cpu")


def test_unknown_backend_name_is_a_config_error(model_dir):
    with pytest.raises(ConfigError, match="auto"):
        create_backend(model_dir, "openvino")


def test_missing_gpu_is_reported_for_explicit_devices(model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        TorchBackend.load(model_dir, device="cuda")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        OnnxRuntimeBackend.load(model_dir, providers=["CUDAExecutionProvider"])


def test_provider_plans():
    cpu_only = ["AzureExecutionProvider", "CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert plan_providers(cpu_only) == ["CPUExecutionProvider"]
    assert plan_providers(gpu) == gpu
    assert plan_providers(gpu, device="cpu") == ["CPUExecutionProvider"]
    assert plan_providers(gpu, providers="CUDAExecutionProvider,CPUExecutionProvider") == gpu[1:]
    with pytest.raises(BackendUnavailableError, match="device='cuda'"):
        plan_providers(cpu_only, device="cuda")
    with pytest.raises(ConfigError):
        plan_providers(gpu, device="tpu")


# -- refused models -------------------------------------------------------------------------
def test_missing_metadata_is_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    (bad / METADATA_FILE).unlink()
    for load in (OnnxRuntimeBackend.load, TorchBackend.load):
        with pytest.raises(ModelError, match="metadata.json is missing"):
            load(bad)
    with pytest.raises(ModelError):
        create_backend(bad, "auto")


def test_class_count_different_from_model_output_is_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    four = [*CLASSES, "yellow"]
    edit_metadata(bad, classes=four)
    replace(bad / LABELS_FILE, "".join(f"{c}\n" for c in four))
    with pytest.raises(ModelError, match="outputs 3 classes but metadata.json lists 4"):
        OnnxRuntimeBackend.load(bad)
    with pytest.raises(ModelError, match="classes"):
        TorchBackend.load(bad)
    with pytest.raises(ModelError):  # auto does not fall back to another backend for a bad model
        create_backend(bad, "auto")


def test_labels_txt_disagreeing_with_metadata_is_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    replace(bad / LABELS_FILE, "blue\ngreen\nred\n")
    with pytest.raises(ModelError, match="labels.txt"):
        OnnxRuntimeBackend.load(bad)


def test_corrupt_onnx_bytes_are_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    data = bytearray((model_dir / ONNX_FILE).read_bytes()[:4096])
    data[100:200] = b"\xff" * 100
    replace(bad / ONNX_FILE, bytes(data))
    with pytest.raises(ModelError, match="does not match metadata.json"):
        OnnxRuntimeBackend.load(bad)
    edit_metadata(bad, onnx_sha256="")  # without a recorded hash, onnxruntime itself must refuse it
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        OnnxRuntimeBackend.load(bad)


def test_input_size_different_from_preprocessing_is_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    edit_metadata(bad, preprocess=PreprocessConfig(size=96).to_dict())
    with pytest.raises(ModelError, match="preprocessing"):
        OnnxRuntimeBackend.load(bad)


def test_checkpoint_with_pickled_objects_is_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    (bad / CHECKPOINT_FILE).unlink()
    state = torch.load(model_dir / CHECKPOINT_FILE, weights_only=True)
    state["extra"] = Path("/etc/passwd")  # any non-tensor object needs full unpickling
    torch.save(state, bad / CHECKPOINT_FILE)
    with pytest.raises(ModelError, match="weights_only=True"):
        TorchBackend.load(bad)


def test_corrupt_or_missing_checkpoint_is_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    replace(bad / CHECKPOINT_FILE, b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="cannot be loaded"):
        TorchBackend.load(bad)
    (bad / CHECKPOINT_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        TorchBackend.load(bad)


def test_unknown_backbone_is_refused(model_dir, tmp_path):
    bad = clone(model_dir, tmp_path / "m")
    edit_metadata(bad, backbone="resnet999")
    with pytest.raises(ModelError, match="resnet999.*cannot rebuild"):
        TorchBackend.load(bad)


def test_unknown_options_are_refused(model_dir):
    with pytest.raises(ConfigError, match="intra_op_treads"):
        OnnxRuntimeBackend.load(model_dir, intra_op_treads=2)
    with pytest.raises(ConfigError, match="intra_op_threads"):
        OnnxRuntimeBackend.load(model_dir, intra_op_threads=-1)
