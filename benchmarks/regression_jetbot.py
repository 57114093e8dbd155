"""Regression on a synthetic JetBot road-following layout: mean XY error against the mean-target baseline.

What a user checking the package on road-following data does, measured once (not a timed test):

1. render a synthetic JetBot-layout folder: 224x224 camera-like frames named ``xy_<px>_<py>_<id>.jpg``
   (pixel coordinates of the target in that image, as the road-following notebook saves them), the target
   being a drawn dot on a textured floor with distractor blobs and lighting changes; a training folder
   and a held-out folder from different seeds;
2. import the training folder into a dataset as ``dli-perception dataset import-jetbot`` does (targets
   normalised by the image size, :func:`dli_perception.core.tasks.jetbot_xy`);
3. ``dli-perception train DATASET MODEL_DIR --weights none --size 96 --epochs 12 --mode MODE`` (random
   initialisation: no ImageNet weights here);
4. ``dli-perception classify MODEL_DIR HELD_OUT --json`` and the mean Euclidean error of its ``x, y``
   against the held-out targets, beside the error of always predicting the training split's mean target
   (the baseline), reported as a ratio (the bar the package aims for: at most 0.5).

    python benchmarks/regression_jetbot.py [--train 400] [--held-out 100] [--mode finetune] [--epochs 12]

Random weights, synthetic data: the figures say the loop learns the task, not how well a pretrained
model does on a real road.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

SIZE = 224


def render(rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """One 224x224 RGB frame and the target's pixel coordinates."""
    import cv2

    base = rng.uniform(60, 140, 3)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    grad = (rng.uniform(-40, 40) * xx + rng.uniform(-40, 40) * yy)[..., None]
    img = np.clip(base + grad + rng.normal(0, 8, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 6)):  # distractors: dull blobs
        c = tuple(int(v) for v in rng.integers(20, 110, 3))
        cv2.circle(img, tuple(int(v) for v in rng.integers(0, SIZE, 2)), int(rng.integers(5, 18)), c, -1)
    px, py = int(rng.integers(8, SIZE - 8)), int(rng.integers(SIZE // 3, SIZE - 8))  # targets on the floor
    cv2.circle(img, (px, py), 9, (255, 140, 0), -1)
    cv2.circle(img, (px, py), 9, (255, 255, 255), 2)
    return img, px, py


def write_jetbot_folder(folder: Path, n: int, seed: int) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        img, px, py = render(rng)
        name = f"xy_{px:03d}_{py:03d}_{uuid.UUID(int=int(rng.integers(0, 2**63)))}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


def import_folder(folder: Path, dataset: Path) -> None:
    """The road-following folder into a regression dataset (``dataset import-jetbot``'s importer: targets
    normalised by the image size)."""
    from dli_perception.core.dataset import DatasetStore, import_jetbot

    with DatasetStore(dataset) as store:
        import_jetbot(store, folder)


def held_out_targets(folder: Path) -> dict[str, tuple[float, float]]:
    from dli_perception.core import tasks

    return {str(p): tasks.jetbot_xy(p.name, SIZE, SIZE) for p in sorted(folder.iterdir())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=400, help="training folder images (train + validation split)")
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--mode", default="finetune")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--extra", default="", help="more train flags, e.g. '--loss smooth_l1'")
    ap.add_argument("--keep", type=Path, help="work here instead of a temp dir (kept)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="dli-regression-"))
    train_dir, held_dir, dataset, model = work / "jetbot", work / "held_out", work / "dataset", work / "model"
    if not dataset.exists():
        write_jetbot_folder(train_dir, args.train, seed=1)
        write_jetbot_folder(held_dir, args.held_out, seed=2)
        import_folder(train_dir, dataset)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "dli_perception.cli", "train", str(dataset), str(model), "--weights", "none"]
    cmd += ["--size", str(args.size), "--epochs", str(args.epochs), "--mode", args.mode, "--no-progress"]
    cmd += ["--threads", str(args.threads), *args.extra.split()]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    train_s = time.perf_counter() - t0
    if run.returncode != 0:
        print(run.stdout, run.stderr, sep="\n")
        return 1
    print("\n".join(line for line in run.stdout.splitlines() if line.strip()))
    cls = subprocess.run(
        [sys.executable, "-m", "dli_perception.cli", "classify", str(model), str(held_dir), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in cls.stdout.splitlines()]
    truth = held_out_targets(held_dir)
    meta = json.loads((model / "metadata.json").read_text())
    baseline = np.asarray(meta["metrics"]["baseline_xy"])
    pred = np.asarray([[r["x"], r["y"]] for r in rows])
    true = np.asarray([truth[r["file"]] for r in rows])
    err = float(np.sqrt(((pred - true) ** 2).sum(axis=1)).mean())
    base = float(np.sqrt(((true - baseline) ** 2).sum(axis=1)).mean())
    served = cls.stderr.split("variant=")[1].split()[0] if "variant=" in cls.stderr else "?"
    print(
        f"\nheld-out ({len(rows)} images, served variant {served}): mean XY error {err:.4f}, mean-target baseline "
        f"{base:.4f}, ratio {err / base:.3f} (aim: <= 0.5); training {train_s:.0f} s; "
        f"random weights, synthetic data; work dir {work}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
