"""``dli-perception train`` and ``dli-perception export`` end to end: real training on synthetic scenes
rendered into an image folder, real model directories, Ctrl-C delivered as a real SIGINT.

Runs use 64x64 images, random weights and one torch thread (``--threads 1``), so they take seconds
(the ONNX export dominates).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dli_perception import cli
from dli_perception.commands import train as train_cmd
from dli_perception.commands.train_summary import format_seconds
from dli_perception.core.modeldir import load_metadata
from dli_perception.core.report import CONFUSION_FILE, CURVES_FILE
from dli_perception.core.synthetic import SyntheticScenes
from dli_perception.core.training import ProgressEvent

CLASSES = ("blocked", "free", "left")
MODULE = "dli_perception.commands.train"
FAST = ("--size 64 --weights none --epochs 2 --batch-size 8 --threads 1 --early-stop 0 --val-fraction 0.25").split()
LONG = [*FAST, "--epochs", "200", "--batch-size", "4", "--mode", "finetune"]
"""A run that lasts minutes unless cancelled."""


def _main(argv: list[str]) -> tuple[int, str, str]:
    """Run ``dli-perception ARGV`` in this process; returns (rc, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    assert MODULE in cli.COMMANDS
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def _make_dataset(root: Path, per_class: int = 10) -> Path:
    scenes = SyntheticScenes(CLASSES, 64, 64, seed=2)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            assert cv2.imwrite(
                str(root / name / f"{i:03d}.png"), cv2.cvtColor(scenes.render(name, i), cv2.COLOR_RGB2BGR)
            )
    return root


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _previous_model(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    (path / "metadata.json").write_text('{"previous": true}\n')
    (path / "model.onnx").write_bytes(b"previous model")
    return _snapshot(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _make_dataset(tmp_path_factory.mktemp("cli_ds") / "ds")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_train") / "model"
    rc, stdout, stderr = _main(["train", str(dataset), "--out", str(out), *FAST])
    return {"rc": rc, "out": out, "stdout": stdout, "stderr": stderr}


def _onnx_logits(model_dir: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_train_writes_a_model_dir_and_prints_the_summary(trained, dataset):
    assert trained["rc"] == 0, trained["stderr"][-3000:]
    out: Path = trained["out"]
    meta = load_metadata(out)
    assert meta.classes == list(CLASSES) and meta.preprocess.size == 64 and meta.backbone == "resnet18"
    assert meta.training["status"] == "completed" and meta.training["epochs_run"] == 2
    assert [h["stage"] for h in meta.training["history"]] == ["head", "finetune"]
    for name in (CURVES_FILE, CONFUSION_FILE):
        assert (out / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt_dir = out.parent / "model.checkpoints"
    assert (ckpt_dir / "best.pt").is_file() and (ckpt_dir / "last.pt").is_file()
    stdout = trained["stdout"]
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "stage"])
    rows = [line.split() for line in lines[header + 2 : header + 4]]
    assert [r[:2] for r in rows] == [["1", "head"], ["2", "finetune"]]
    best = meta.metrics["best_epoch"]
    assert rows[best - 1][-1] == "best"
    assert f"best epoch {best}: validation accuracy" in stdout
    per_class = next(i for i, line in enumerate(lines) if line.split()[:3] == ["class", "precision", "recall"])
    assert [line.split()[0] for line in lines[per_class + 2 : per_class + 5]] == list(CLASSES)
    assert f"dataset {dataset.resolve()}: 30 images in 3 classes" in stdout
    assert f"report: {out}/report/ {CURVES_FILE}, {CONFUSION_FILE}, per_class.md" in stdout
    assert f"best checkpoint: {ckpt_dir / 'best.pt'}" in stdout
    # progress bars on stderr: the feature cache, then one bar per epoch with loss, accuracy and time left
    stderr = trained["stderr"]
    for text in ("backbone features", "epoch 1/2 head", "epoch 2/2 finetune", "loss=", "val_acc=", "eta="):
        assert text in stderr, text
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".model.")]  # no temp dirs left


def test_export_subcommand_rebuilds_the_model_from_best_pt(trained, tmp_path):
    assert trained["rc"] == 0
    best = trained["out"].parent / "model.checkpoints" / "best.pt"
    out = tmp_path / "exported"
    rc, stdout, stderr = _main(["export", str(best), "--out", str(out), "--no-report"])
    assert rc == 0, stderr
    assert f"exported {out}: 3 classes" in stdout
    meta, original = load_metadata(out), load_metadata(trained["out"])
    assert meta.classes == original.classes and meta.metrics["best_epoch"] == original.metrics["best_epoch"]
    assert not (out / "report").exists() or not any((out / "report").glob("*.png"))
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(_onnx_logits(out, x), _onnx_logits(trained["out"], x), rtol=1e-4, atol=1e-4)


def _one_error_line(rc: int, stderr: str, command: str = "train") -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(f"dli-perception {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_dataset", "does not exist"),
        ("no_class_folders", "class folder(s)"),
        ("no_images", "hold no usable image"),
        ("weights_file_missing", "nowhere.pth does not exist"),
        ("imagenet_not_cached", "not in the torch hub cache"),
        ("bad_option", "head-then-finetune needs epochs >= 2"),
    ],
)
def test_errors_print_one_line_exit_1_and_leave_the_model_dir(case, expected, dataset, tmp_path, monkeypatch):
    out = tmp_path / "model"
    before = _previous_model(out)
    data, extra = dataset, []
    if case == "missing_dataset":
        data = tmp_path / "nowhere"
    elif case == "no_class_folders":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "no_images":
        data = tmp_path / "no_images"
        for name in CLASSES:
            (data / name).mkdir(parents=True)
            (data / name / "notes.txt").write_text("not an image")
    if case == "weights_file_missing":
        extra = ["--weights", str(tmp_path / "nowhere.pth")]
    elif case == "imagenet_not_cached":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
        extra = ["--weights", "imagenet"]
    elif case == "bad_option":
        extra = ["--mode", "head-then-finetune", "--epochs", "1"]
    rc, stdout, stderr = _main(["train", str(data), "--out", str(out), *FAST, *extra])
    assert expected in _one_error_line(rc, stderr)
    if case == "imagenet_not_cached":
        assert "weights='none'" in stderr and "resnet18-f37072fd.pth" in stderr
    assert _snapshot(out) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no half-built export


def test_export_errors_print_one_line(tmp_path):
    rc, _, stderr = _main(["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "m")])
    assert "does not exist" in _one_error_line(rc, stderr, "export")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    rc, _, stderr = _main(["export", str(junk), "--out", str(tmp_path / "m")])
    assert "cannot read checkpoint" in _one_error_line(rc, stderr, "export")
    assert not (tmp_path / "m").exists()


class SigintWhen:
    """Send this process a real SIGINT (what Ctrl-C does) once ``path`` exists; gives up after a deadline."""

    def __init__(self, path: Path, deadline_s: float = 300.0) -> None:
        self.path, self.deadline_s, self.sent = path, deadline_s, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        end = time.monotonic() + self.deadline_s
        while not self._stop.is_set() and time.monotonic() < end:
            if self.path.exists():
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)
                return
            self._stop.wait(0.05)

    def __enter__(self) -> SigintWhen:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_ctrl_c_cancels_keeps_the_best_checkpoint_and_the_previous_model(dataset, tmp_path):
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"
    before = _previous_model(out)
    with SigintWhen(ckpt / "best.pt") as interrupt:  # after the first epoch, long before the 200th
        rc, stdout, stderr = _main(["train", str(dataset), "--out", str(out), "--checkpoint-dir", str(ckpt), *LONG])
    assert interrupt.sent and rc == train_cmd.EXIT_CANCELLED, stdout + stderr
    assert "cancelling after the current batch" in stderr
    assert f"cancelled: {out} was not replaced" in stdout and f"dli-perception export {ckpt / 'best.pt'}" in stdout
    assert "(cancelled," in stdout  # the summary is printed for the epochs that completed
    assert _snapshot(out) == before
    assert (ckpt / "best.pt").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back


def test_export_cancelled_exports_the_best_completed_epoch(dataset, tmp_path):
    out, ckpt = tmp_path / "model", tmp_path / "ckpt"
    _previous_model(out)
    with SigintWhen(ckpt / "best.pt") as interrupt:
        rc, stdout, stderr = _main(
            [
                "train",
                str(dataset),
                "--out",
                str(out),
                "--checkpoint-dir",
                str(ckpt),
                "--export-cancelled",
                *LONG,
            ]
        )
    assert interrupt.sent and rc == train_cmd.EXIT_CANCELLED, stdout + stderr
    assert f"cancelled: {out} holds the best completed epoch" in stdout
    meta = load_metadata(out)
    assert meta.classes == list(CLASSES) and meta.training["status"] == "cancelled"
    assert 1 <= meta.training["epochs_run"] < 200


def test_progress_bar_follows_the_events(capsys):
    progress = train_cmd.TrainProgress()
    progress(ProgressEvent("load", 0, 3))
    for b in (1, 2):
        progress(ProgressEvent("features", 0, 3, b, 2, eta_s=75.0, stage="head"))
    progress(ProgressEvent("train", 1, 3, 1, 4, loss=0.9, accuracy=0.5, eta_s=3725.0, stage="head"))
    progress(ProgressEvent("val", 1, 3, 1, 1, loss=0.7, accuracy=0.6, eta_s=10.0, stage="head"))
    progress(
        ProgressEvent("epoch", 1, 3, loss=0.8, accuracy=0.55, eta_s=9.0, stage="head", val_loss=0.7, val_accuracy=0.625)
    )
    progress(ProgressEvent("done", 1, 3, eta_s=0.0, message="completed"))
    err = capsys.readouterr().err
    assert "backbone features" in err and "eta=1m15s" in err
    assert "epoch 1/3 head" in err and "loss=0.9" in err and "eta=1h02m" in err
    assert "val=1/1" in err and "val_acc=0.625" in err and "eta=9s" in err
    assert progress.last_event.phase == "done"
    shown = [format_seconds(s) for s in (None, float("nan"), 0.4, 59.6, 61, 7200)]
    assert shown == ["?", "?", "0s", "1m00s", "1m01s", "2h00m"]


def test_options_map_onto_train_config():
    import argparse

    parser = argparse.ArgumentParser()
    train_cmd.register(parser.add_subparsers())
    argv = "train d --out m --size 96 --no-augment --hflip --lr 0.01 --workers 0 --backbone mobilenet_v3_small"
    args = parser.parse_args([*argv.split(), "--no-feature-cache"])
    config = train_cmd.config_from_args(args)
    assert (config.preprocess.size, config.augment, config.hflip, config.lr) == (96, False, True, 0.01)
    assert (config.num_workers, config.backbone, config.feature_cache) == (0, "mobilenet_v3_small", False)
    assert (config.mode, config.epochs, config.weights) == ("head-then-finetune", 10, "imagenet")  # defaults
    assert train_cmd.checkpoint_dir_for(Path("/x/model"), None) == Path("/x/model.checkpoints")
    assert args.func is train_cmd.run


def test_train_reads_a_road_following_folder_as_it_is(tmp_path):
    """A folder of xy_<x>_<y>_<id>.jpg files trains a regression model without a prior import, and the
    folder itself is left exactly as it was (the import goes to a temporary dataset)."""
    from dli_perception.core import synthetic

    src = tmp_path / "road"
    synthetic.write_jetbot_folder(src, 12, size=(64, 48), seed=5)
    (src / "notes.jpg").write_bytes(b"not an image and not an xy name")
    before = _snapshot(src)
    out = tmp_path / "model"
    rc, stdout, err = _main(["train", str(src), str(out), *FAST, "--epochs", "1", "--mode", "finetune"])
    assert rc == 0, err
    assert "road-following folder" in stdout and "imported 12 of 13 images" in stdout
    meta = load_metadata(out)
    assert meta.task == "regression" and meta.classes == ["x", "y"]
    assert _snapshot(src) == before  # nothing written into the source folder
