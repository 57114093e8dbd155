"""Classification throughput: dli_perception's inference path vs a DLI-notebook-style loop, same CPU, same run.

Baseline (what the DLI notebooks do, one frame at a time): PIL image -> torchvision
``Resize((224, 224))``, ``ToTensor``, ``Normalize`` -> eager torch ResNet-18 under ``no_grad``.
Ours: the shared preprocessing (OpenCV + NumPy) -> a backend from ``create_backend``:
torch (channels_last, inference_mode), ONNX Runtime fp32, ONNX Runtime with the default
``precision=auto`` (the model dir's INT8 Q/DQ variant when it passed its check), one frame at a
time and in batches of 4; then each variant file of the model dir on its own (INT8 Q/DQ, and
the FP16 ONNX, which is made for TensorRT: ONNX Runtime's CPU provider runs it through casts);
per-call latency percentiles for each. Then the node: ``classifier_node`` with DEFAULT parameters as its own
process, fed 640x480 frames by a client in this process (``benchmarks/node_pipeline.py``): one frame
at a time, frame stamp -> result received against the node's own inference time, with the node's
per-stage breakdown; then flooded: results per second, as a ratio to the naive loop.

The model is a ResNet-18 from random weights (no ImageNet download here) whose 3-class head is
trained on synthetic scenes, exported by the package's own exporter with its precision variants;
frames are 640x480 synthetic scenes.

    .venv/bin/python benchmarks/classifier.py [--frames 60] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("free", "blocked", "thumbs_up")
WARMUP_CALLS = 3
"""Untimed calls before each measurement: one was not enough for the naive loop (its first timed
frames ran several times slower, p95 near 900 ms, which inflated every ratio to it)."""


def _scene_dataset(root: Path, scenes, per_class: int) -> Path:
    import cv2

    data = root / "scenes"
    for cls in CLASSES:
        (data / cls).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(data / cls / f"{i}.png"), cv2.cvtColor(scenes.render(cls, 1000 + i), cv2.COLOR_RGB2BGR))
    return data


def _model_dir(root: Path, size: int, scenes, per_class: int) -> Path:
    """ResNet-18 from random weights with its head trained on synthetic scenes, exported with its variants.

    Speed does not depend on the weights; the trained head gives the INT8 and FP16 agreement checks
    (on the held-out scenes) a real decision to agree on.
    """
    import torch

    from dli_perception.core.export import export_model_dir
    from dli_perception.core.preprocess import PreprocessConfig
    from dli_perception.core.training import TrainConfig, train

    torch.manual_seed(0)
    data = _scene_dataset(root, scenes, per_class)
    config = TrainConfig(
        mode="head",
        weights="none",
        epochs=15,
        lr=0.05,
        batch_size=16,
        num_workers=0,
        val_fraction=0.3,
        early_stop_patience=0,
        preprocess=PreprocessConfig(size=size),
        augment=False,
    )
    return export_model_dir(train(data, config), root / "model", report=False)


def _variant_session_step(path: Path, cfg, threads: int):
    """An ONNX Runtime CPU session on one variant file, fed by the shared preprocessing."""
    import onnxruntime as ort

    from dli_perception.core.preprocess import preprocess_batch

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])

    def step(images):
        session.run(None, {"input": preprocess_batch(images, cfg)})

    return step


def _measure(step, frames: list[np.ndarray], n: int, batch: int = 1) -> dict:
    """Throughput (frames/s) and per-call latency percentiles (ms) of ``step`` over ``n`` frames."""
    for _ in range(WARMUP_CALLS):  # eager torch and onnxruntime settle over their first calls
        step(frames[:batch])
    done = 0
    times = []
    start = time.perf_counter()
    while done < n:
        t = time.perf_counter()
        step([frames[(done + j) % len(frames)] for j in range(batch)])
        times.append((time.perf_counter() - t) * 1e3)
        done += batch
    times.sort()
    return {
        "fps": done / (time.perf_counter() - start),
        "p50_ms": times[len(times) // 2],
        "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
    }


def _measure_interleaved(steps: dict, frames: list[np.ndarray], n: int, rounds: int = 5) -> dict:
    """frames/s of each step, measured in ``rounds`` alternating turns so load drift on a shared machine hits all alike."""
    for step in steps.values():
        for _ in range(WARMUP_CALLS):
            step(frames[:1])
    spent = dict.fromkeys(steps, 0.0)
    per_turn = max(1, n // rounds)
    for r in range(rounds):
        for label, step in steps.items():
            start = time.perf_counter()
            for i in range(per_turn):
                step([frames[(r * per_turn + i) % len(frames)]])
            spent[label] += time.perf_counter() - start
    return {label: rounds * per_turn / t for label, t in spent.items()}


def node_pipeline(model_dir: Path, frames: list[np.ndarray], args: argparse.Namespace) -> dict:
    """classifier_node with DEFAULT parameters as its own process, fed by a client (benchmarks/node_pipeline.py).

    One frame at a time: frame stamp -> result received, the node's per-stage times and its
    inference time; then flooded at ``--flood-hz``: results per second.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import node_pipeline as pipeline

    client = pipeline.Client(frames)
    try:
        return pipeline.measure(
            client,
            model_dir,
            latency_frames=args.node_frames,
            flood_hz=args.flood_hz,
            flood_seconds=args.node_seconds,
            log=Path(tempfile.gettempdir()) / "classifier_bench_node.log",
        )
    finally:
        client.close()


def naive_dli_loop(model_dir: Path, threads: int):
    """The notebook way: PIL + torchvision transforms + eager torch, one frame at a time."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from dli_perception.core.export import load_checkpoint_model

    if threads:
        torch.set_num_threads(threads)
    model = load_checkpoint_model(model_dir).eval()
    tf = transforms.Compose(
        [
            transforms.Resize((224, 224)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )

    def step(images):
        for image in images:
            x = tf(Image.fromarray(image)).unsqueeze(0)
            with torch.no_grad():
                torch.softmax(model(x), dim=1)

    return step


def backend_step(backend):
    from dli_perception.core.preprocess import preprocess_batch

    cfg = backend.metadata.preprocess

    def step(images):
        backend.infer(preprocess_batch(images, cfg))

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per measurement")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: library default)")
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--node-seconds", type=float, default=10.0, help="flood window of the node measurement")
    parser.add_argument("--node-frames", type=int, default=40, help="frames sent one at a time to the node")
    parser.add_argument("--flood-hz", type=float, default=100.0, help="rate the node is flooded at")
    parser.add_argument("--no-node", action="store_true", help="skip the classifier_node measurement")
    parser.add_argument("--train-images", type=int, default=20, help="synthetic scenes per class for the model")
    args = parser.parse_args()

    from dli_perception.core.backends.select import create_backend
    from dli_perception.core.modeldir import load_metadata
    from dli_perception.core.synthetic import SyntheticScenes

    scenes = SyntheticScenes(CLASSES, 640, 480)
    frames = [scenes.render(CLASSES[i % 3], i) for i in range(12)]
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = _model_dir(root, args.size, scenes, args.train_images)
        meta = load_metadata(model_dir)
        opts = {"intra_op_threads": args.threads}
        rows = [
            (
                "naive DLI loop (PIL + torchvision + eager torch)",
                1,
                _measure(naive_dli_loop(model_dir, args.threads), frames, args.frames),
            )
        ]
        configs = [
            ("torch backend (channels_last, inference_mode)", "torch", {}),
            ("onnxruntime fp32", "onnxruntime", dict(opts, device="cpu", precision="fp32")),
            ("onnxruntime precision auto (the default)", "onnxruntime", dict(opts, device="cpu")),
        ]
        for label, name, kw in configs:
            backend, _ = create_backend(model_dir, name, **kw)
            label = f"{label}: {backend.variant}" if "auto" in label else label
            for batch in (1, 4):
                rows.append((label, batch, _measure(backend_step(backend), frames, args.frames, batch)))
            backend.close()
        for variant, label in (
            ("int8_qdq", "onnxruntime INT8 Q/DQ (model.int8.onnx)"),
            ("fp16", "onnxruntime CPU on model.fp16.onnx (for TensorRT)"),
        ):
            info = meta.variants.get(variant, {})
            notes.append(f"{variant}: {info.get('status', 'absent')}: {info.get('reason', '')}")
            if info.get("status") == "accepted":
                step = _variant_session_step(model_dir / info["file"], meta.preprocess, args.threads)
                rows.append((label, 1, _measure(step, frames, args.frames)))
        fp32_backend, _ = create_backend(model_dir, "onnxruntime", **dict(opts, device="cpu", precision="fp32"))
        auto_backend, _ = create_backend(model_dir, "onnxruntime", **dict(opts, device="cpu"))
        interleaved = _measure_interleaved(
            {
                "naive DLI loop": naive_dli_loop(model_dir, args.threads),
                "onnxruntime fp32": backend_step(fp32_backend),
                f"onnxruntime precision auto ({auto_backend.variant})": backend_step(auto_backend),
            },
            frames,
            args.frames,
        )
        fp32_backend.close()
        auto_backend.close()
        pipeline = None if args.no_node else node_pipeline(model_dir, frames, args)
    base = rows[0][2]["fps"]
    print(f"ResNet-18 {args.size}x{args.size}, {len(CLASSES)} classes, 640x480 frames, {os.cpu_count()} CPUs")
    print(f"{'pipeline':<52} {'batch':>5} {'frames/s':>9} {'vs naive':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for label, batch, m in rows:
        print(f"{label:<52} {batch:>5} {m['fps']:9.2f} {m['fps'] / base:8.2f}x {m['p50_ms']:8.1f} {m['p95_ms']:8.1f}")
    first = next(iter(interleaved.values()))
    print("\nbatch 1, measured in alternating turns (drift in the machine's load hits each alike):")
    for label, value in interleaved.items():
        print(f"  {label:<50} {value:9.2f} frames/s {value / first:8.2f}x naive")
    print("variants in the model dir (checked against fp32 on the held-out scenes):")
    for note in notes:
        print(f"  {note}")
    if pipeline:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from node_pipeline import report

        print()
        print(report("classifier_node, default parameters", pipeline, naive_fps=base))
        naive = interleaved["naive DLI loop"]
        print(
            f"  the same against the naive loop's alternating-turn figure ({naive:.2f} frames/s): "
            f"{pipeline['flood_results_per_s'] / naive:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
