"""Training speed and memory: head mode on cached features vs the backbone every epoch vs fine-tuning.

Three runs of the default training configuration (ResNet-18, 224 px, batch 16, TrainConfig's
defaults otherwise; random weights, as speed and memory do not depend on them) on the same small
synthetic dataset rendered into an image folder:

* ``head, cached features``: the frozen backbone runs once over the data (``features s``), then
  every epoch trains the head on the cached feature vectors (``feature_cache=True``, the default);
* ``head, backbone every epoch``: the same training with ``feature_cache=False``;
* ``finetune``: every layer trained.

Seconds per epoch are the median over the run's epochs (the first one pays for warm-ups). Each run
is its own process, so its peak resident memory (``getrusage`` ``ru_maxrss``) is its own:
``peak MiB`` is the whole process, ``+train MiB`` what training added to the peak after importing
torch, ``workers MiB`` the largest DataLoader worker's peak (it counts pages shared with its parent),
``GPU MiB`` the peak of allocated CUDA memory. The per-epoch ratio against cached head training is
the number the package is measured by (target: at least 10x); peak memory is compared with the
1.5 GB that fits a 4 GB Jetson. The cached head model is then exported and its ONNX predictions
compared with torch on every image of the dataset. On a busy machine ``--threads 1`` gives steadier
numbers (threads spinning under contention slow the tiny head epochs down several times).

    python benchmarks/training.py [--per-class 40] [--epochs 3] [--device auto] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ("free", "blocked", "left")
CONFIGS = {
    "head_cached": ("head, cached features", {"mode": "head", "feature_cache": True}),
    "head_nocache": ("head, backbone every epoch", {"mode": "head", "feature_cache": False}),
    "finetune": ("finetune (all layers)", {"mode": "finetune"}),
}
TARGET_RATIO = 10.0
TARGET_PEAK_MB = 1536.0


def _rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _children_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def render_dataset(root: Path, per_class: int, width: int = 320, height: int = 240) -> Path:
    """Synthetic camera scenes of :data:`CLASSES` as JPEG files in an image folder."""
    import cv2

    from dli_perception.core.synthetic import SyntheticScenes, iter_samples

    scenes = SyntheticScenes(CLASSES, width, height, seed=0)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for name, index, image in iter_samples(scenes, per_class):
        cv2.imwrite(str(root / name / f"{index:04d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


def _agreement(result, model_dir: Path, data: Path) -> dict[str, float]:
    """ONNX Runtime vs torch on every image of the dataset: share of equal top classes, largest logit gap."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from dli_perception.core.preprocess import preprocess_batch
    from dli_perception.core.training import read_rgb

    files = sorted(p for p in data.rglob("*.jpg"))
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    same, worst = 0, 0.0
    for start in range(0, len(files), 32):
        x = preprocess_batch([read_rgb(f) for f in files[start : start + 32]], result.preprocess)
        with torch.inference_mode():
            expected = result.model(torch.from_numpy(x)).numpy()
        got = session.run(None, {"input": x})[0]
        same += int((got.argmax(1) == expected.argmax(1)).sum())
        worst = max(worst, float(np.abs(got - expected).max()))
    return {"images": len(files), "top1_agreement": same / len(files), "max_abs_logit_diff": worst}


def worker(name: str, data: Path, args: argparse.Namespace) -> dict:
    """One configuration in this (fresh) process; returns timings and memory as a dict."""
    import torch

    from dli_perception.core.training import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = _rss_mb()
    overrides = dict(CONFIGS[name][1])
    config = TrainConfig(weights="none", epochs=args.epochs, early_stop_patience=0, device=args.device, **overrides)
    t0 = time.perf_counter()
    result = train(data, config)
    wall = time.perf_counter() - t0
    stage = "finetune" if config.mode == "finetune" else "head"
    out = {
        "name": name,
        "epoch_s": statistics.median(result.timings["epoch_s"][stage]),
        "epoch_times_s": result.timings["epoch_s"][stage],
        "features_s": result.timings.get("features_s", 0.0),
        "load_s": result.timings.get("load_s", 0.0),
        "train_wall_s": wall,
        "baseline_mb": baseline,
        "peak_mb": _rss_mb(),
        "children_peak_mb": _children_rss_mb(),
        "cuda_peak_mb": result.timings.get("cuda_peak_bytes", 0) / 2**20,
        "device": result.timings.get("device"),
        "amp": result.timings.get("amp"),
        "best_val_acc": result.best_val_acc,
        "threads": torch.get_num_threads(),
        "images": result.dataset.num_images,
    }
    if name == "head_cached" and args.export:
        from dli_perception.core.export import export_model_dir

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            model_dir = export_model_dir(result, Path(tmp) / "model", report=False)
            out["export_s"] = time.perf_counter() - t0
            out["agreement"] = _agreement(result, model_dir, data)
    return out


def _run_worker(name: str, data: Path, args: argparse.Namespace, tmp: Path) -> dict:
    result_file = tmp / f"{name}.json"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--data",
        str(data),
        "--result",
        str(result_file),
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    if not args.export:
        cmd.append("--no-export")
    print(f"running {CONFIGS[name][0]} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(result_file.read_text())


def report(rows: dict[str, dict], args: argparse.Namespace) -> None:
    base = rows["head_cached"]
    first = next(iter(rows.values()))
    print(
        f"ResNet-18, 224 px, batch 16, {first['images']} images ({len(CLASSES)} classes, 320x240 JPEG), "
        f"{args.epochs} epochs, device {first['device']}{' + AMP' if first['amp'] else ''}, "
        f"{first['threads']} torch threads, {os.cpu_count()} CPUs"
    )
    header = (
        f"{'configuration':<28} {'s/epoch':>9} {'x cached':>9} {'features s':>10} {'total s':>8} "
        f"{'peak MiB':>9} {'+train MiB':>10} {'workers MiB':>11} {'GPU MiB':>8} {'val acc':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        total = r["features_s"] + r["epoch_s"] * args.epochs
        print(
            f"{CONFIGS[name][0]:<28} {r['epoch_s']:9.4f} {r['epoch_s'] / base['epoch_s']:8.1f}x "
            f"{r['features_s']:10.2f} {total:8.2f} {r['peak_mb']:9.0f} "
            f"{r['peak_mb'] - r['baseline_mb']:10.0f} "
            f"{r['children_peak_mb']:11.0f} {r['cuda_peak_mb']:8.0f} {r['best_val_acc']:7.3f}"
        )
    print()
    if "head_nocache" in rows:
        ratio = rows["head_nocache"]["epoch_s"] / base["epoch_s"]
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        print(
            f"head epoch on cached features: {ratio:.0f}x faster than running the backbone every epoch "
            f"({verdict} the {TARGET_RATIO:g}x target)"
        )
    for name, r in rows.items():
        peak = max(r["peak_mb"], r["children_peak_mb"])
        if peak > TARGET_PEAK_MB:
            print(f"{CONFIGS[name][0]}: peak {peak:.0f} MiB exceeds the {TARGET_PEAK_MB:.0f} MiB Jetson budget")
    if "agreement" in base:
        a = base["agreement"]
        print(
            f"exported ONNX vs torch on {a['images']} images: "
            f"top-1 agreement {100 * a['top1_agreement']:.1f}%, "
            f"largest logit difference {a['max_abs_logit_diff']:.2e} (export {base['export_s']:.1f} s)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=40, help="images per class (default 40)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per configuration (default 3)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default")
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="run only these configurations")
    parser.add_argument("--no-export", dest="export", action="store_false", help="skip the ONNX agreement check")
    parser.add_argument("--worker", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.result.write_text(json.dumps(worker(args.worker, args.data, args)))
        return 0
    names = [n for n in CONFIGS if not args.only or n in args.only or n == "head_cached"]
    with tempfile.TemporaryDirectory(prefix="dli_bench_train_") as tmp:
        tmp_path = Path(tmp)
        data = render_dataset(tmp_path / "data", args.per_class)
        rows = {name: _run_worker(name, data, args, tmp_path) for name in names}
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
