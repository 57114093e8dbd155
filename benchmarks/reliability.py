"""Reliability figures: the long versions of test/reliability/ (fuzzing, soak, overload, crashes), printed.

The scenarios are the tests' own (test/reliability/scenarios.py), with bigger sizes:

* fuzz: ``--fuzz-examples`` (10 000) hypothesis-generated, mostly malformed Image messages at a running
  classifier_node and as many at a recorder_node (a capture after each), and compressed images declaring
  huge dimensions at the converter (child process, memory limited); fewer frames sent than asked for
  fails the run;
* soak: camera_node (synthetic, 30 fps, 320x240) -> classifier_node + recorder_node as processes for
  ``--soak-frames`` classified frames: RSS after the warm-up and at the end, latency p50/p95 in the
  first and the last 200 frames, frame accounting, dataset manifest == files;
* overload: camera_node at ``--overload-hz`` 640x480 -> classifier_node with a ResNet-18 (224 px,
  onnxruntime, 1 thread), slower than the frame rate: drops, latency, result age, memory;
* crash: trainer_node SIGKILLed mid-epoch, resumed from last.pt, compared with the uninterrupted run.

    .venv/bin/python benchmarks/reliability.py [--quick] [--only fuzz,soak,overload,crash] [--json out.json]

``--quick`` uses the test sizes (a few minutes); the default takes about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "test"), str(REPO / "test" / "reliability")]

# The tests' environment: a private ROS domain, discovery on this host, the package's Fast DDS profile.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(101, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

SECTIONS = ("fuzz", "soak", "overload", "crash")


def _machine() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} CPUs, load average {load:.1f} when the run started (shared machine)"


def _print(title: str, figures: dict) -> None:
    print(f"\n== {title}", flush=True)
    for key, value in figures.items():
        print(f"  {key}: {value}", flush=True)


def fuzz(context, tmp: Path, examples: int) -> dict:
    from fixtures_models import build_colour_model_dir
    from scenarios import fuzz_classifier, fuzz_recorder

    model = build_colour_model_dir(tmp / "fuzz_model", ("red", "green", "blue"))
    out = {"classifier": fuzz_classifier(context, model, examples, reproducible=False)}
    _print("fuzz: classifier_node", out["classifier"])
    out["recorder"] = fuzz_recorder(context, tmp / "fuzz_ds", examples, reproducible=False)
    _print("fuzz: recorder_node", out["recorder"])
    # fuzz frames each node received (hypothesis could stop early on an exhausted search space); the
    # classifier's figures include 3 good frames sent after the fuzzing, the recorder's 1
    out["frames_per_node"] = {
        "classifier_node": out["classifier"]["bad"] + out["classifier"]["good"] - 3,
        "recorder_node": out["recorder"]["bad"] + out["recorder"]["saved"] - 1,
    }
    out["shortfall"] = {node: examples - n for node, n in out["frames_per_node"].items() if n < examples}
    _print("fuzz: frames per node", out["frames_per_node"])
    out["bombs"] = bombs()
    _print("fuzz: compressed images declaring huge sizes (converter, child process)", out["bombs"])
    return out


BOMB = textwrap.dedent(
    """
    import json, sys, time
    from types import SimpleNamespace
    sys.path.insert(0, sys.argv[1])
    import cv2, numpy
    from memprobe import jpeg_bytes, limit_address_space, measure_peak_growth_kb, png_bytes
    from dli_perception.core.imaging import to_rgb8
    kind, w, h = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data = jpeg_bytes(w, h) if kind == "jpeg" else png_bytes(w, h, bytes(32))
    to_rgb8(SimpleNamespace(format=kind, data=jpeg_bytes(8, 8)))
    limit_address_space(3 << 30)
    t0 = time.perf_counter()
    result, growth = measure_peak_growth_kb(lambda: to_rgb8(SimpleNamespace(format=kind, data=data)))
    print(json.dumps({"bytes": len(data), "outcome": type(result).__name__,
                      "peak_growth_mb": round(growth / 1024, 1),
                      "seconds": round(time.perf_counter() - t0, 2)}))
    """
)


def bombs() -> dict:
    rows = {}
    for kind, w, h in (
        ("png", 30000, 30000),
        ("jpeg", 60000, 60000),
        ("jpeg", 10000, 10000),
        ("jpeg", 16000, 16000),
    ):
        out = subprocess.run(
            [sys.executable, "-c", BOMB, str(REPO / "test" / "reliability"), kind, str(w), str(h)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        rows[f"{kind} {w}x{h}"] = (
            json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else out.stderr[-300:]
        )
    return rows


def soak(context, tmp: Path, frames: int) -> dict:
    from fixtures_models import build_colour_model_dir
    from scenarios import soak as run

    model = build_colour_model_dir(
        tmp / "soak_model", ("free", "blocked"), {"free": (90, 160, 90), "blocked": (140, 90, 70)}
    )
    figures = run(context, tmp / "soak", model, frames=frames, fps=30.0, record_hz=10.0)
    _print(f"soak: {frames} frames at 30 fps, recorder at 10 Hz", figures)
    return figures


def _resnet_dir(root: Path) -> Path:
    import torch

    from dli_perception.core.export import export_model_dir
    from dli_perception.core.preprocess import PreprocessConfig
    from dli_perception.core.training import build_model

    torch.manual_seed(0)
    model, _ = build_model("resnet18", num_classes=3, weights="none")
    return export_model_dir(
        model.eval(),
        root / "resnet18",
        classes=["free", "blocked", "left"],
        preprocess=PreprocessConfig(size=224),
        backbone="resnet18",
        report=False,
    )


def overload(context, tmp: Path, offered_hz: float, seconds: float) -> dict:
    from scenarios import overload as run

    figures = run(context, _resnet_dir(tmp), offered_hz=offered_hz, seconds=seconds)
    _print(
        f"overload: ResNet-18 224 px (onnxruntime, 1 thread), 640x480 frames offered at {offered_hz:g} Hz",
        figures,
    )
    return figures


def crash(context, tmp: Path) -> dict:
    import cv2
    from scenarios import trainer_crash_and_resume

    from dli_perception.core.synthetic import SyntheticScenes

    data = tmp / "crash_ds"
    scenes = SyntheticScenes(("free", "blocked"), 64, 64, seed=5)
    for name in ("free", "blocked"):
        (data / name).mkdir(parents=True)
        for i in range(12):
            cv2.imwrite(str(data / name / f"{i:03d}.png"), cv2.cvtColor(scenes.render(name, i), cv2.COLOR_RGB2BGR))
    params = {
        "image_size": 64,
        "weights": "none",
        "mode": "finetune",
        "epochs": 5,
        "batch_size": 4,
        "val_fraction": 0.25,
        "early_stop_patience": 0,
        "torch_threads": 1,
        "progress_rate_hz": 100.0,
        "seed": 3,
    }
    (tmp / "crash").mkdir()
    figures = trainer_crash_and_resume(context, tmp / "crash", data, params, kill_epoch=3, twin=True)
    _print("crash: trainer_node SIGKILLed in epoch 3 of 5, resumed from last.pt", figures)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the test sizes")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--soak-frames", type=int, default=None, help="classified frames of the soak (20000)")
    parser.add_argument(
        "--fuzz-examples", type=int, default=None, help="fuzz frames sent to each node (10000; --quick: 60)"
    )
    parser.add_argument("--overload-hz", type=float, default=60.0, help="frame rate offered in the overload run")
    parser.add_argument("--overload-s", type=float, default=None, help="seconds of the overload run (60)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    soak_frames = args.soak_frames or (1000 if args.quick else 20000)
    examples = args.fuzz_examples or (60 if args.quick else 10_000)
    overload_s = args.overload_s or (15.0 if args.quick else 60.0)

    from dli_perception import transport

    transport.apply_default_profile()
    from graphutil import new_context

    print(f"dli_perception reliability benchmark: {_machine()}", flush=True)
    results: dict = {"machine": _machine()}
    context = new_context()
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            if "fuzz" in only:
                results["fuzz"] = fuzz(context, tmp, examples)
            if "soak" in only:
                results["soak"] = soak(context, tmp, soak_frames)
            if "overload" in only:
                results["overload"] = overload(context, tmp, args.overload_hz, overload_s)
            if "crash" in only:
                results["crash"] = crash(context, tmp)
    finally:
        context.try_shutdown()
    print(f"\ntotal {time.monotonic() - t0:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    shortfall = results.get("fuzz", {}).get("shortfall")
    if shortfall:
        print(f"fuzz: fewer frames than the {examples} asked for: {shortfall}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
