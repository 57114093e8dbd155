"""Data-parallel training throughput: images/s with 1 and 2 torchrun processes, side by side.

Renders a synthetic image folder, then trains on it (head-then-finetune, random weights) three ways
in fresh processes, in the same run:

* ``plain``: one process without torch.distributed (``core.training.train``), the baseline;
* ``ddp x1``: torchrun with one process (the DDP code path, world size 1);
* ``ddp x2``: torchrun with two processes (gloo on the CPU, nccl with ``--device cuda``);
* ``plain 1t``: the baseline with one torch thread, i.e. the share of the cores each of the two
  processes gets, to tell the effect of splitting threads from the effect of DDP.

Reported per run: fine-tuning images/s (training images of a fine-tuning epoch / its mean wall
time, validation included), feature-cache images/s (head mode: images through the frozen backbone
/ cache time), and the ratio to the plain run. Threads are shared out: each of N processes gets
``cores // N`` torch threads, so on a 2-core machine two processes do not get more arithmetic than
one; they can only lose to communication. Expect a speed-up only with more cores or GPUs than
processes. No export is timed.

    .venv/bin/python benchmarks/distributed.py [--per-class 40] [--size 64] [--epochs 4] [--batch-size 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CLASSES = ("free", "blocked", "left")


def make_dataset(root: Path, per_class: int, size: int) -> None:
    import cv2

    from dli_perception.core.synthetic import SyntheticScenes

    scenes = SyntheticScenes(CLASSES, size, size, seed=3)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i:04d}.png"), cv2.cvtColor(scenes.render(name, i), cv2.COLOR_RGB2BGR))


def config(args: argparse.Namespace):
    from dli_perception.core.preprocess import PreprocessConfig
    from dli_perception.core.training import TrainConfig

    size = args.size
    return TrainConfig(
        mode="head-then-finetune",
        weights="none",
        epochs=args.epochs,
        batch_size=args.batch_size,
        early_stop_patience=0,
        num_workers=0,
        device=args.device,
        preprocess=PreprocessConfig.for_size(size),
    )


def figures(result, processes: int, threads: int) -> dict:
    timings = result.timings
    ds = result.dataset
    n_train, n_val = sum(ds.train_counts.values()), sum(ds.val_counts.values())
    finetune = (timings.get("epoch_mean_s") or {}).get("finetune")
    return {
        "processes": processes,
        "threads_per_process": threads,
        "finetune_images_per_s": n_train / finetune if finetune else None,
        "feature_images_per_s": (n_train + n_val) / timings["features_s"] if timings.get("features_s") else None,
        "finetune_epoch_s": finetune,
        "best_val_acc": result.best_val_acc,
    }


def worker(args: argparse.Namespace) -> int:
    """One process of a measured run (``--worker plain`` or ``--worker ddp`` under torchrun)."""
    import torch

    threads = int(os.environ["BENCH_THREADS"])
    torch.set_num_threads(threads)
    if args.worker == "plain":
        from dli_perception.core.training import train

        result = train(args.data, config(args))
        Path(args.result).write_text(json.dumps(figures(result, 1, threads)))
        return 0
    from dli_perception.core import distributed

    with distributed.process_group(backend="auto", device=args.device) as ctx:
        result = distributed.train_distributed(ctx, args.data, config(args))
        if ctx.is_main:
            Path(args.result).write_text(json.dumps(figures(result, ctx.world_size, threads)))
    return 0


def median_row(rows: list[dict]) -> dict:
    import statistics

    out = dict(rows[0])
    for key in ("finetune_images_per_s", "feature_images_per_s", "finetune_epoch_s"):
        out[key] = statistics.median(r[key] for r in rows)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(kind: str, processes: int, threads: int, args: argparse.Namespace, data: Path, tmp: Path) -> dict:
    result = tmp / f"{kind}{processes}x{threads}.json"
    common = [
        "--worker",
        kind,
        "--data",
        str(data),
        "--result",
        str(result),
        "--size",
        str(args.size),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), BENCH_THREADS=str(threads))
    if kind == "plain":
        cmd = [sys.executable, __file__, *common]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(processes),
            "--master-port",
            str(free_port()),
            __file__,
            *common,
        ]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--repeat", type=int, default=3, help="runs of each kind, alternated; the median is shown")
    p.add_argument("--worker", choices=("plain", "ddp"), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="dli_bench_ddp_") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        make_dataset(data, args.per_class, args.size)
        cores = os.cpu_count() or 1
        runs = (
            ("plain", "plain", 1, cores),
            ("plain 1t", "plain", 1, 1),
            ("ddp x1", "ddp", 1, cores),
            ("ddp x2", "ddp", 2, max(1, cores // 2)),
        )
        load_before = os.getloadavg()[0]
        samples: dict[str, list[dict]] = {name: [] for name, *_ in runs}
        for i in range(args.repeat):  # alternate the order so a change of machine load hits every row
            for name, kind, procs, threads in runs if i % 2 == 0 else runs[::-1]:
                samples[name].append(measure(kind, procs, threads, args, data, tmp))
        load_after = os.getloadavg()[0]
    rows = [(name, median_row(samples[name])) for name, *_ in runs]
    base = rows[0][1]
    print(
        f"{len(CLASSES) * args.per_class} images {args.size}px, batch {args.batch_size}, {args.epochs} epochs "
        f"(head-then-finetune), random weights, {os.cpu_count()} cores, device {args.device}, median of "
        f"{args.repeat}; load average {load_before:.1f} before, {load_after:.1f} after"
    )
    print(
        f"{'run':<8} {'procs':>5} {'thr/proc':>8} {'finetune img/s':>15} {'ratio':>6} {'features img/s':>15} {'ratio':>6}"
    )
    for name, r in rows:
        ft = r["finetune_images_per_s"]
        fe = r["feature_images_per_s"]
        print(
            f"{name:<8} {r['processes']:>5} {r['threads_per_process']:>8} {ft:>15.1f} "
            f"{ft / base['finetune_images_per_s']:>6.2f} {fe:>15.1f} {fe / base['feature_images_per_s']:>6.2f}"
        )
    print(json.dumps({name: r for name, r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
