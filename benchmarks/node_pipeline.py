"""classifier_node as a separate process, fed by a client: latency per stage and throughput when flooded.

Used by ``benchmarks/classifier.py`` (beside the naive loop, same run) and runnable alone. The node
is the ``classifier_node`` entry point with DEFAULT parameters (only ``model_dir`` set, plus any
``--param``); this process publishes pre-rendered 640x480 rgb8 frames on ``image_raw``, each
stamped just before it is published, and subscribes to ``~/scores``:

* ``latency``: one frame at a time (the next one 50 ms after the previous result), so the node is
  idle when a frame arrives: frame stamp -> result received here, against the node's own
  ``inference_ms`` for the same frames, and the node's per-stage times (``stages_ms``);
* ``flood``: frames published at ``--flood-hz`` for ``--flood-seconds``: results per second, and
  the node process's CPU time per result (``/proc/<pid>/stat``).

``--compare DIR`` runs the same measurements, in turn, with the node imported from another source
tree (e.g. ``git archive <commit> | tar -x -C DIR``) for before/after figures in one run.

    .venv/bin/python benchmarks/node_pipeline.py MODEL_DIR [--compare DIR] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nodebench import SpunNode, cpu_s, stop_processes

REPO = Path(__file__).resolve().parent.parent
STAGES = ("transport", "wait", "convert", "preprocess", "inference", "publish")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Client(SpunNode):
    """Publisher of frames and collector of ~/scores in this process (one rclpy context, spun in a thread)."""

    def __init__(self, frames) -> None:
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from dli_perception import transport
        from dli_perception.core.imaging import cv2_to_imgmsg
        from dli_perception.nodes.qos import EVENTS, SENSOR_DATA

        transport.apply_default_profile()
        super().__init__("node_pipeline_client")
        self.pub = self.node.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.msgs = [cv2_to_imgmsg(f, "rgb8") for f in frames]
        self.results: list[tuple[int, dict]] = []  # (receive time ns, scores JSON)
        self.node.create_subscription(String, "/classifier_node/scores", self._on_scores, EVENTS)
        # The label goes out first (no stamp: one frame at a time, the first label after a frame is its own).
        self.labels: list[int] = []  # receive times ns
        self.node.create_subscription(String, "/label", self._on_label, EVENTS)
        self._n = 0
        self.publish_ms = 0.0
        self.start_spinning()

    def _on_scores(self, msg) -> None:
        now = time.time_ns()
        with self.lock:
            self.results.append((now, json.loads(msg.data)))

    def _on_label(self, msg) -> None:
        now = time.time_ns()
        with self.lock:
            self.labels.append(now)

    def label_after(self, t_ns: int) -> int | None:
        with self.lock:
            return next((t for t in self.labels if t >= t_ns), None)

    def publish(self) -> int:
        """Publish the next frame stamped now; returns its stamp (ns)."""
        msg = self.msgs[self._n % len(self.msgs)]
        self._n += 1
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        self.pub.publish(msg)
        self.publish_ms = (time.time_ns() - stamp) / 1e6  # this process's share of the "transport" stage
        return stamp

    def result_for(self, stamp: int) -> tuple[int, dict] | None:
        with self.lock:
            for got, r in reversed(self.results):
                if r["stamp"]["sec"] * 1_000_000_000 + r["stamp"]["nanosec"] == stamp:
                    return got, r
        return None

    def count_since(self, t_ns: int) -> int:
        with self.lock:
            return sum(1 for got, _ in self.results if got >= t_ns)


def _start_node(model_dir: Path, params: list[str], source: Path | None, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{source or REPO}:{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-m", "dli_perception.nodes.classifier_node", "--ros-args", "-p", f"model_dir:={model_dir}"]
    for p in params:
        cmd += ["-p", p]
    return subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=source or REPO
    )


def measure(
    client: Client,
    model_dir: Path,
    *,
    params: list[str] = (),
    source: Path | None = None,
    latency_frames: int = 40,
    flood_hz: float = 100.0,
    flood_seconds: float = 10.0,
    log: Path,
) -> dict:
    """Latency (one frame at a time) and flood throughput of one classifier_node process."""
    proc = _start_node(model_dir, list(params), source, log)
    try:
        deadline = time.monotonic() + 120.0  # discovery, model load, warm-up
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            stamp = client.publish()
            t = time.monotonic()
            while time.monotonic() - t < 0.5:
                if client.result_for(stamp) is not None:
                    ready = True
                    break
                time.sleep(0.005)
            if ready:
                break
        if not ready:
            raise RuntimeError(f"classifier_node gave no result within 120 s; its log: {log}")
        for _ in range(5):  # warm-up
            stamp = client.publish()
            _wait_result(client, stamp)
        rows = []
        published_ms = []
        label_e2e = []
        for _ in range(latency_frames):
            time.sleep(0.05)
            stamp = client.publish()
            published_ms.append(client.publish_ms)
            got = _wait_result(client, stamp)
            if got is not None:
                rows.append(((got[0] - stamp) / 1e6, got[1]))
                label_at = client.label_after(stamp)
                if label_at is not None and label_at <= got[0] + 50_000_000:
                    label_e2e.append((label_at - stamp) / 1e6)
        # Flood: a steady high rate from this thread; results counted after a 1 s settling time.
        period = 1.0 / flood_hz
        start = time.monotonic()
        next_t = start
        counted_from = None
        cpu0 = 0.0
        sent = 0
        while time.monotonic() - start < flood_seconds + 1.0:
            if counted_from is None and time.monotonic() - start >= 1.0:
                counted_from, cpu0 = time.time_ns(), cpu_s(proc.pid)
            client.publish()
            sent += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        end_ns = time.time_ns()
        cpu1 = cpu_s(proc.pid)
        time.sleep(0.3)
        with client.lock:
            done = sum(1 for got, _ in client.results if counted_from <= got <= end_ns)
        wall = (end_ns - counted_from) / 1e9
    finally:
        stop_processes([proc])
    e2e = [r[0] for r in rows]
    inference = [r[1]["inference_ms"] for r in rows]
    stages = {name: [r[1].get("stages_ms", {}).get(name, float("nan")) for r in rows] for name in STAGES}
    after = [r[0] - sum(r[1].get("stages_ms", {}).get(n, 0.0) for n in STAGES) for r in rows]
    return {
        "frames": len(rows),
        "e2e_p50_ms": statistics.median(e2e),
        "e2e_p95_ms": _pct(e2e, 0.95),
        "inference_p50_ms": statistics.median(inference),
        "stages_p50_ms": {n: statistics.median(v) for n, v in stages.items()},
        "after_publish_p50_ms": statistics.median(after),
        "client_publish_p50_ms": statistics.median(published_ms),
        "label_e2e_p50_ms": statistics.median(label_e2e) if label_e2e else float("nan"),
        "flood_hz": sent / (flood_seconds + 1.0),
        "flood_results_per_s": done / wall,
        "flood_cpu_ms_per_result": 1000.0 * (cpu1 - cpu0) / max(done, 1),
    }


def _wait_result(client: Client, stamp: int, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = client.result_for(stamp)
        if got is not None:
            return got
        time.sleep(0.0005)
    return None


def report(name: str, m: dict, naive_fps: float | None = None) -> str:
    """Lines describing one measurement (ratios against the naive loop when given)."""
    stages = m["stages_p50_ms"]
    has_stages = not any(v != v for v in stages.values())  # NaN: a node without stages_ms
    lines = [
        f"{name}: one frame at a time ({m['frames']} frames): frame stamp -> result received p50 "
        f"{m['e2e_p50_ms']:.1f} ms, p95 {m['e2e_p95_ms']:.1f} ms; inference p50 {m['inference_p50_ms']:.1f} ms; "
        f"e2e/inference {m['e2e_p50_ms'] / m['inference_p50_ms']:.2f}; "
        f"frame stamp -> label received p50 {m['label_e2e_p50_ms']:.1f} ms "
        f"({m['label_e2e_p50_ms'] / m['inference_p50_ms']:.2f}x inference)",
    ]
    if has_stages:
        parts = ", ".join(f"{n} {stages[n]:.2f}" for n in STAGES)
        lines.append(
            f"  per stage p50, ms: {parts} (of which the client's publish call {m['client_publish_p50_ms']:.2f}); "
            f"scores + DDS back to the client {m['after_publish_p50_ms']:.2f}; "
            f"e2e - inference {m['e2e_p50_ms'] - m['inference_p50_ms']:.2f}"
        )
    ratio = f" = {m['flood_results_per_s'] / naive_fps:.2f}x the naive loop" if naive_fps else ""
    lines.append(
        f"  flooded at {m['flood_hz']:.0f} Hz: {m['flood_results_per_s']:.2f} results/s{ratio}; "
        f"node CPU {m['flood_cpu_ms_per_result']:.1f} ms per result"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--param", action="append", default=[], help="extra node parameter, name:=value")
    parser.add_argument("--compare", type=Path, help="source tree of another version of the node, measured in turn")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--latency-frames", type=int, default=40)
    parser.add_argument("--flood-hz", type=float, default=100.0)
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from dli_perception.core.synthetic import SyntheticScenes

    scenes = SyntheticScenes(("free", "blocked", "thumbs_up"), 640, 480)
    frames = [scenes.render(("free", "blocked", "thumbs_up")[i % 3], i) for i in range(6)]
    client = Client(frames)
    sources = {"this tree": None} | ({f"compare ({args.compare})": args.compare} if args.compare else {})
    logdir = Path(os.environ.get("TMPDIR", "/tmp"))
    try:
        for r in range(args.rounds):
            for name, source in sources.items():
                m = measure(
                    client,
                    args.model_dir,
                    params=args.param,
                    source=source,
                    latency_frames=args.latency_frames,
                    flood_hz=args.flood_hz,
                    flood_seconds=args.flood_seconds,
                    log=logdir / f"node_pipeline_{r}.log",
                )
                print(report(f"round {r + 1}, {name}", m), flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
