"""Data-parallel training end to end: real torchrun launches of ``dli-perception train --nproc 2`` (gloo on
the CPU), a rank killed with SIGKILL mid-run, ranks that see different datasets, a port in use.

Data: synthetic scenes at 32x32, random weights (no downloads), one torch thread per process, so a
run takes tens of seconds on two shared cores (process start-up and the ONNX export dominate).

Tolerance of "two processes match one": in the head stage every rank runs the same frozen backbone
and the head sees the same global batches, so the numbers agree up to float summation order
(val loss within 1e-3 relative, equal val accuracy). Fine-tuning is not bit-equal: batch norm
normalises each process's half batch with its own statistics, so the trajectories drift apart;
the best validation accuracy must agree within 0.25 (3 of the 12 validation images) and the best
validation loss within 35 % relative — loose enough for that drift, tight enough to catch a run
that learns nothing, trains on one half of the data, or reports one rank's share of the validation.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dli_perception import cli
from dli_perception.core.modeldir import load_metadata
from dli_perception.core.synthetic import SyntheticScenes

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("blocked", "free", "left")
COMMON = ("--size 32 --weights none --threads 1 --early-stop 0 --val-fraction 0.25 --workers 0 --no-progress").split()
MATCH = [*COMMON, "--epochs", "3", "--batch-size", "8"]
LONG = [*COMMON, "--epochs", "200", "--batch-size", "4", "--mode", "finetune"]
TIMEOUT_S = 300


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("OMP_NUM_THREADS", None)
    return env


def _cli() -> list[str]:
    return [sys.executable, "-m", "dli_perception.cli"]


def _make_dataset(root: Path, per_class: int = 8, seed: int = 2) -> Path:
    scenes = SyntheticScenes(CLASSES, 32, 32, seed=seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = cv2.cvtColor(scenes.render(name, i), cv2.COLOR_RGB2BGR)
            assert cv2.imwrite(str(root / name / f"{i:03d}.png"), image)
    return root


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _make_dataset(tmp_path_factory.mktemp("ddp_ds") / "ds")


@pytest.fixture(scope="module")
def ddp_run(dataset, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp") / "model"
    proc = subprocess.run(
        [*_cli(), "train", str(dataset), "--out", str(out), *MATCH, "--nproc", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return {"rc": proc.returncode, "out": out, "stdout": proc.stdout, "stderr": proc.stderr}


def _onnx_accuracy(model_dir: Path, dataset: Path, val_fraction: float, seed: int) -> tuple[float, int]:
    """Accuracy of model.onnx on the validation split, computed here with ONNX Runtime (not by training)."""
    import onnxruntime as ort

    from dli_perception.core.preprocess import preprocess
    from dli_perception.core.training import TrainConfig, load_data, read_rgb

    meta = load_metadata(model_dir)
    data = load_data(dataset, TrainConfig(weights="none", val_fraction=val_fraction, seed=seed))
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.stack([preprocess(read_rgb(path), meta.preprocess) for path, _ in data.val])
    logits = session.run(None, {meta.input_name: batch})[0]
    labels = np.asarray([y for _, y in data.val])
    return float((logits.argmax(axis=1) == labels).mean()), len(labels)


@pytest.mark.slow
def test_two_gloo_processes_write_a_model_dir_matching_one_process(ddp_run, dataset):
    from dli_perception.commands.train import config_from_args
    from dli_perception.core.training import train
    from dli_perception.train import build_parser

    assert ddp_run["rc"] == 0, ddp_run["stderr"][-3000:]
    assert "rank 0/2" in ddp_run["stderr"] and "rank 1/2" in ddp_run["stderr"]
    out: Path = ddp_run["out"]
    meta = load_metadata(out)
    assert meta.classes == list(CLASSES)
    timings = meta.training["timings"]
    assert timings["world_size"] == 2 and timings["backend"] == "gloo" and timings["batch_per_rank"] == 4
    # Only rank 0 wrote: one model dir, one pair of checkpoints, no leftovers of a second writer.
    assert sorted(p.name for p in out.parent.iterdir()) == ["model", "model.checkpoints"]
    assert sorted(p.name for p in (out.parent / "model.checkpoints").iterdir()) == ["best.pt", "last.pt"]

    # The model dir's own claim, checked independently with ONNX Runtime on the same split.
    acc, n_val = _onnx_accuracy(out, dataset, 0.25, 0)
    assert n_val == 6
    assert abs(acc - meta.metrics["best_val_acc"]) <= 1 / n_val + 1e-9

    # The same options in one process (in-process core training, no export needed to compare).
    args = build_parser().parse_args([str(dataset), "--out", "unused", *MATCH])
    torch_threads = __import__("torch").get_num_threads()
    __import__("torch").set_num_threads(1)
    try:
        single = train(dataset, config_from_args(args))
    finally:
        __import__("torch").set_num_threads(torch_threads)
    ddp_hist = meta.training["history"]
    assert [h["stage"] for h in ddp_hist] == [h.stage for h in single.history] == ["head", "finetune", "finetune"]
    head_ddp, head_one = ddp_hist[0], single.history[0]
    assert head_ddp["val_loss"] == pytest.approx(head_one.val_loss, rel=1e-3)
    assert head_ddp["val_acc"] == pytest.approx(head_one.val_acc, abs=1e-9)
    assert head_ddp["train_loss"] == pytest.approx(head_one.train_loss, rel=1e-3)
    assert abs(meta.metrics["best_val_acc"] - single.best_val_acc) <= 0.25 + 1e-9
    assert meta.metrics["best_val_loss"] == pytest.approx(single.best_val_loss, rel=0.35)


def _read_until(stream, pattern: str, deadline: float) -> re.Match:
    lines = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"{pattern!r} not seen; got:\n{''.join(lines)[-3000:]}")


@pytest.mark.slow
def test_a_rank_killed_mid_run_fails_the_run_clearly_and_resume_finishes_it(dataset, tmp_path):
    out = tmp_path / "model"
    ckpt = tmp_path / "model.checkpoints"
    proc = subprocess.Popen(
        [*_cli(), "train", str(dataset), "--out", str(out), *LONG, "--nproc", "2", "--dist-timeout", "60"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        pid = int(_read_until(proc.stderr, r"rank 1/2 \(pid (\d+)", deadline).group(1))
        while not (ckpt / "last.pt").is_file():  # epoch 1 is done; epoch 2 is running
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before epoch 1 did"
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - killed < 60, "the surviving rank hung"
    assert proc.returncode == 1
    assert f"rank 1 (pid {pid}) was killed by SIGKILL first" in stderr
    assert f"{out} was not written" in stderr and f"--resume {ckpt / 'last.pt'}" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # Resume from the last completed epoch, still with two processes; the run finishes and exports.
    import torch

    done = int(torch.load(ckpt / "last.pt", weights_only=True)["epoch"])
    argv = [*COMMON, "--batch-size", "4", "--mode", "finetune", "--epochs", str(done + 1)]
    proc = subprocess.run(
        [*_cli(), "train", str(dataset), "--out", str(out), *argv, "--nproc", "2", "--resume", str(ckpt / "last.pt")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = load_metadata(out)
    assert [h["epoch"] for h in meta.training["history"]] == list(range(1, done + 2))


def _worker(dataset: Path, out: Path, rank: int, port: int, options: list[str] = MATCH) -> subprocess.Popen:
    env = _env() | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dli_perception.train",
            str(dataset),
            "--out",
            str(out),
            *options,
            "--dist-timeout",
            "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ranks_with_different_datasets_refuse_to_train(dataset, tmp_path):
    """Two 'nodes' (started by hand, as torchrun would on two machines) whose copies differ by one image."""
    other = tmp_path / "other"
    _make_dataset(other)
    image = cv2.imread(str(other / "free" / "003.png"))
    image[0, 0] = 255 - image[0, 0]
    assert cv2.imwrite(str(other / "free" / "003.png"), image)
    out = tmp_path / "model"
    port = _free_port()
    procs = [_worker(dataset, out, 0, port), _worker(other, out, 1, port)]
    results = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    for rank, (p, (_, stderr)) in enumerate(zip(procs, results, strict=True)):
        assert p.returncode == 1, stderr[-2000:]
        assert f"rank {rank}: error: the dataset differs between ranks" in stderr
        assert str(dataset) in stderr and str(other) in stderr
        assert "Traceback" not in stderr
    assert not out.exists() and not (tmp_path / "model.checkpoints").exists()


@pytest.mark.slow
def test_a_node_whose_peer_dies_fails_with_a_clear_error_instead_of_hanging(dataset, tmp_path):
    """Two 'nodes' without a common torchrun (as on two machines): nobody stops rank 0 but its own collectives."""
    out = tmp_path / "model"
    port = _free_port()
    rank0, rank1 = _worker(dataset, out, 0, port, LONG), _worker(dataset, out, 1, port, LONG)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (tmp_path / "model.checkpoints" / "last.pt").is_file():
            assert rank0.poll() is None and time.monotonic() < deadline, "the run ended before epoch 1 did"
            time.sleep(0.1)
        rank1.kill()
        killed = time.monotonic()
        _, stderr = rank0.communicate(timeout=120)
    finally:
        for p in (rank0, rank1):
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert time.monotonic() - killed < 70, "rank 0 waited past its --dist-timeout"
    assert rank0.returncode == 1, stderr[-2000:]
    assert "rank 0: error: rank 0 lost contact with the other ranks" in stderr
    assert f"checkpoints of completed epochs are in {tmp_path / 'model.checkpoints'}" in stderr
    assert "Traceback" not in stderr and not out.exists()


@pytest.mark.slow
def test_a_port_in_use_is_named_with_the_way_out(dataset, tmp_path):
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, _, stderr = _main(
            ["train", str(dataset), "--out", str(tmp_path / "m"), *MATCH, "--nproc", "2", "--master-port", str(port)]
        )
        assert rc == 1
        assert f"port {port} is in use" in stderr and "--master-port" in stderr
        # The same when the ranks are started by hand (rank 0 cannot open the rendezvous store).
        env = _env() | {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
        env["MASTER_PORT"] = str(port)
        proc = subprocess.run(
            [sys.executable, "-m", "dli_perception.train", str(dataset), "--out", str(tmp_path / "m"), *MATCH],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    assert proc.returncode == 1
    assert f"port {port} is in use" in proc.stderr and "--master-port" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "m").exists()


def test_worker_arguments_repeat_the_training_options():
    from dli_perception.cli import build_parser
    from dli_perception.commands.train_launch import worker_arguments
    from dli_perception.train import build_parser as worker_parser

    argv = [
        "train",
        "ds",
        "--out",
        "m",
        "--epochs",
        "3",
        "--no-augment",
        "--hflip",
        "--nproc",
        "2",
        "--backend",
        "gloo",
    ]
    args = build_parser().parse_args(argv)
    again = worker_parser().parse_args(worker_arguments(args))
    for name in ("dataset", "out", "epochs", "augment", "hflip", "backend", "dist_timeout"):
        assert getattr(again, name) == getattr(args, name), name
    assert "--nproc" not in worker_arguments(args)
