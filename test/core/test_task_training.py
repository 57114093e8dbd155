"""Regression and multi-label training end to end: real ResNet-18 runs from random weights on small synthetic sets.

Regression: a bright dot drawn on a noisy background, its centre the target; the trained model must
beat always predicting the training split's mean target by a clear margin. Multi-label: a square
and/or a disc drawn (or neither); the model must learn which are present. Then export, ONNX Runtime
against torch, and the ``classify`` CLI against the backend. Images are small (48 px) and torch runs
single-threaded: the suite shares two cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from dli_perception.core import tasks  # noqa: E402
from dli_perception.core import training as T  # noqa: E402
from dli_perception.core.dataset import DatasetStore  # noqa: E402
from dli_perception.core.preprocess import PreprocessConfig  # noqa: E402
from dli_perception.core.training.service import torch_threads  # noqa: E402
from dli_perception.errors import DatasetError, TrainingError  # noqa: E402

SIZE = 48
REPO = Path(__file__).resolve().parents[2]


def dot_image(xy: tuple[float, float], rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    img = np.clip(rng.normal(60, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    px, py = tasks.xy_to_pixels(*xy, size, size)
    cv2.circle(img, (round(px), round(py)), 4, (255, 230, 40), -1)
    return img


def shapes_image(square: bool, disc: bool, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    img = np.clip(rng.normal(70, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    side = size // 4
    if square:
        x, y = rng.integers(1, size // 2 - side, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + side, int(y) + side), (230, 40, 40), -1)
    if disc:
        x, y = rng.integers(size // 2 + side // 2, size - side // 2 - 1, 2)
        cv2.circle(img, (int(x), int(y)), side // 2, (40, 220, 60), -1)
    return img


def make_xy_store(root: Path, n: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with DatasetStore(root, image_format="png") as store:
        for _ in range(n):
            xy = tuple(float(v) for v in rng.uniform(-0.75, 0.75, 2))
            store.add(dot_image(xy, rng), xy=xy)
    return root


def make_multilabel_store(root: Path, n: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with DatasetStore(root, image_format="png") as store:
        for i in range(n):
            square, disc = bool(i % 2), bool((i // 2) % 3 == 0)
            store.add(
                shapes_image(square, disc, rng), labels=[n for n, on in (("square", square), ("disc", disc)) if on]
            )
    return root


def cfg(**kw) -> T.TrainConfig:
    base = dict(
        weights="none",
        mode="finetune",
        epochs=6,
        batch_size=8,
        lr=3e-3,
        backbone_lr_factor=1.0,
        num_workers=0,
        early_stop_patience=0,
        preprocess=PreprocessConfig.for_size(SIZE),
        seed=0,
    )
    base.update(kw)
    return T.TrainConfig(**base)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def xy_run(tmp_path_factory):
    root = make_xy_store(tmp_path_factory.mktemp("xy") / "ds")
    events = []
    with torch_threads(1):  # module-scoped: set up before the function-scoped one_torch_thread
        result = T.train(root, cfg(), on_progress=events.append)
    return root, result, events


def test_regression_beats_the_mean_target_baseline(xy_run):
    _, result, events = xy_run
    m = result.metrics
    assert result.task == tasks.REGRESSION and result.classes == ["x", "y"]
    assert m["images"] == 13 and m["baseline_mean_error"] > 0.4
    assert m["mean_error"] < 0.6 * m["baseline_mean_error"], m  # random weights, synthetic dots
    assert m["mae_x"] > 0 and m["rmse"] >= m["mean_error"]
    best = [h for h in result.history if h.epoch == result.best_epoch][0]
    assert best.val_metric == pytest.approx(m["mean_error"])
    assert min(h.val_metric for h in result.history) == pytest.approx(m["mean_error"])  # lower is better
    epoch_events = [e for e in events if e.phase == "epoch"]
    assert epoch_events and all(e.metric_name == "mean_error" and e.val_accuracy is None for e in epoch_events)
    assert epoch_events[-1].best_val_metric == pytest.approx(m["mean_error"])
    assert np.asarray(result.val_outputs).shape == (13, 2)


def test_regression_export_onnx_matches_torch_and_classify_cli(xy_run, tmp_path):
    from dli_perception.core.backends.onnxruntime import OnnxRuntimeBackend
    from dli_perception.core.backends.torch_backend import TorchBackend
    from dli_perception.core.export import export_model_dir
    from dli_perception.core.modeldir import load_metadata

    root, result, _ = xy_run
    out = export_model_dir(result, tmp_path / "model")
    meta = load_metadata(out)
    assert meta.task == tasks.REGRESSION and meta.classes == ["x", "y"] and meta.thresholds == {}
    assert (out / "labels.txt").read_text() == "x\ny\n"
    assert meta.metrics["mean_error"] == pytest.approx(result.metrics["mean_error"])
    assert {"xy_scatter.png", "error_histogram.png"} <= {p.name for p in (out / "report").iterdir()}
    int8 = meta.variants["int8_qdq"]
    assert int8["status"] in ("accepted", "refused") and "mean_abs_delta" in int8
    assert (int8["status"] == "accepted") == (int8["mean_abs_delta"] <= 0.05)

    with DatasetStore(root, readonly=True) as store:
        files = [store.path_of(e) for e in store.entries[:6]]
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    with OnnxRuntimeBackend.load(out, precision="fp32") as ort, TorchBackend.load(out) as tb:
        got, want = ort.predict(images), tb.predict(images)
        batch = np.stack([np.zeros((3, SIZE, SIZE), np.float32)] * 2)
        assert not np.allclose(ort.infer(batch).sum(axis=1), 1.0)  # raw XY, no softmax
        with pytest.raises(Exception, match="regression model"):
            ort.classify(images)
    assert np.allclose(got, want, atol=1e-4)

    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "dli_perception.cli",
            "classify",
            str(out),
            *map(str, files),
            "--json",
            "--precision",
            "fp32",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    rows = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert np.allclose([[r["x"], r["y"]] for r in rows], got, atol=1e-5)


def test_multilabel_learns_present_shapes_and_tunes_thresholds(tmp_path):
    from dli_perception.core.backends.onnxruntime import OnnxRuntimeBackend
    from dli_perception.core.export import export_model_dir
    from dli_perception.core.modeldir import load_metadata

    root = make_multilabel_store(tmp_path / "ml")
    result = T.train(root, cfg(mode="head-then-finetune", epochs=5, head_epochs=1))
    m = result.metrics
    assert result.task == tasks.MULTILABEL and result.classes == ["disc", "square"]
    assert m["macro_f1"] >= 0.8 and m["exact_match"] >= 0.6, m  # random weights, synthetic shapes
    assert set(result.thresholds) == {"disc", "square"} and all(0 < t < 1 for t in result.thresholds.values())
    val_counts = result.dataset.val_counts
    assert {k: v["support"] for k, v in m["per_label"].items()} == val_counts and val_counts["square"] > 0
    assert m["pos_weight"]["disc"] > 1.0  # a third of the images show a disc: more negatives than positives

    out = export_model_dir(result, tmp_path / "model", variants=("fp16",))
    meta = load_metadata(out)
    assert meta.task == tasks.MULTILABEL and meta.thresholds == result.thresholds
    fp16 = meta.variants["fp16"]  # checked by active-label-set agreement on the validation images
    assert fp16["task"] == tasks.MULTILABEL and fp16["check_data"] == "validation"
    assert (fp16["status"] == "accepted") == (fp16["agreement"] >= 0.98)
    assert (out / "labels.txt").read_text() == "disc\nsquare\n"
    report = {p.name for p in (out / "report").iterdir()}
    assert {"per_label.md", "per_label.csv", "threshold_curves.png"} <= report
    rng = np.random.default_rng(7)
    images = [shapes_image(s, d, rng) for s, d in ((True, False), (False, True), (True, True), (False, False))]
    with OnnxRuntimeBackend.load(out) as backend:
        preds = backend.predict(images)
    assert all(isinstance(p, tasks.LabelSetPrediction) for p in preds)
    assert preds[0].thresholds == meta.thresholds
    hits = sum(
        set(p.active) == want for p, want in zip(preds, ({"square"}, {"disc"}, {"disc", "square"}, set()), strict=True)
    )
    assert hits >= 3, [p.active for p in preds]


def test_task_mismatch_and_resume_across_tasks_are_refused(xy_run, tmp_path):
    root, result, _ = xy_run
    with pytest.raises(DatasetError, match="regression targets"):
        T.load_data(root, cfg(task="multilabel"))
    assert T.load_data(root, cfg(task="regression")).task == tasks.REGRESSION
    ml = make_multilabel_store(tmp_path / "ml", n=12)
    ckpt = tmp_path / "ckpt"
    T.train(root, cfg(epochs=1, mode="head"), checkpoint_dir=ckpt)
    with pytest.raises(TrainingError, match="task"):
        T.train(ml, cfg(epochs=2, mode="head"), resume=ckpt / "last.pt")


def test_regression_cached_head_then_finetune_resumes_like_an_uninterrupted_run(tmp_path):
    """Head epochs on cached features keep float targets; a run cancelled in fine-tuning and resumed from its
    last checkpoint ends exactly where the uninterrupted run ends (CPU)."""
    import threading

    root = make_xy_store(tmp_path / "ds", n=24)
    config = cfg(mode="head-then-finetune", epochs=3, head_epochs=1, lr=1e-2)
    full = T.train(root, config)
    cancel = threading.Event()

    def on_progress(event: T.ProgressEvent) -> None:
        if event.phase == "train" and event.epoch == 3 and event.batch == 1:
            cancel.set()

    cut = T.train(root, config, checkpoint_dir=tmp_path / "c", cancel=cancel, on_progress=on_progress)
    assert cut.cancelled and [h.epoch for h in cut.history] == [1, 2]
    assert [h.stage for h in full.history] == ["head", "finetune", "finetune"]
    resumed = T.train(root, config, resume=tmp_path / "c" / T.LAST_CHECKPOINT)
    assert [h.val_metric for h in resumed.history] == [h.val_metric for h in full.history]
    assert resumed.metrics == full.metrics and all(math.isfinite(h.val_metric) for h in full.history)


def test_cli_summary_reports_the_regression_figures(xy_run):
    from dli_perception.commands.train import summary_lines

    text = "\n".join(summary_lines(xy_run[1], None))
    assert "val error" in text and "validation mean XY error" in text and "mean-target baseline" in text
    assert "(regression): 64 images, outputs x, y (51 training, 13 validation)" in text
