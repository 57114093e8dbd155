"""What the one-process runner (``dli-perception up``) saves against separate node processes.

camera_node (synthetic 640x480 rgb8 at 30 Hz) -> classifier_node (a tiny nearest-colour ONNX model
from test/fixtures_models.py, onnxruntime, 1 thread, so the pipeline's own costs dominate), with
the same parameters in three layouts:

* ``1 process, hand-off``: both nodes in one process, one single-threaded executor, frames handed
  over in-process (``up``'s default; nodes/localframes.py);
* ``1 process, DDS``: the same process with ``--no-local-frames`` (frames through Fast DDS);
* ``2 processes``: the camera_node and classifier_node entry points, as launch starts them.

For each, after a warm-up, over ``--seconds``: CPU time of the node processes
(``/proc/<pid>/stat`` utime+stime) per second and per classified frame; classified frames per
second; frame stamp (capture time) -> ``~/scores`` received here (one small DDS hop to this
process in every layout), p50/p95; memory as RSS and PSS sums (``/proc/<pid>/smaps_rollup``; PSS
splits shared pages, such as Fast DDS's shared-memory segment, between the processes).
Layouts run one after another, ``--repeat`` times in turn; medians are printed.

    .venv/bin/python benchmarks/runner.py [--seconds 15] [--repeat 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nodebench import SpunNode, cpu_s, stop_processes

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LAYOUTS = ("1 process, hand-off", "1 process, DDS", "2 processes")
NODES = ("camera_node", "classifier_node")
START_DEADLINE_S = 90.0


@dataclass
class Result:
    layout: str
    processes: int
    cpu_percent: float  # % of one core, all node processes together
    cpu_ms_per_frame: float  # CPU time per classified frame
    classified_fps: float
    latency_p50_ms: float  # frame stamp -> scores received here
    latency_p95_ms: float
    node_latency_p50_ms: float  # classifier's own: frame received -> result published
    rss_mib: float
    pss_mib: float


# -- worker: the one-process layouts run this file with --worker ------------------------------------


def _worker(params_file: str, local_frames: bool) -> int:
    """camera_node + classifier_node through ``up``'s own start(): one process, one executor."""
    import dataclasses

    from dli_perception.commands import up
    from dli_perception.nodes.sets import NodeSet

    plan = up.build_plan("classify", [Path(params_file)], local_frames=local_frames)
    plan = dataclasses.replace(plan, node_set=NodeSet("bench", "camera + classifier", NODES))
    return up.start(plan)


# -- measuring --------------------------------------------------------------------------------------


def _memory_kib(pid: int) -> tuple[int, int]:
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key] = int(rest.split()[0])
    return values["Rss"], values["Pss"]


class Scores(SpunNode):
    """Subscribes to ~/scores in this process; keeps (receive ns, stamp ns, node latency ms)."""

    def __init__(self) -> None:
        from std_msgs.msg import String

        from dli_perception.nodes.qos import EVENTS

        super().__init__("runner_bench_sink")
        self.rows: list[tuple[int, int, float]] = []
        self.node.create_subscription(String, "/classifier_node/scores", self._on_scores, EVENTS)
        self.start_spinning()

    def _on_scores(self, msg) -> None:
        now = time.time_ns()
        from dli_perception.core.contracts import Scores

        r = Scores.decode(msg.data)
        with self.lock:
            self.rows.append((now, r.stamp_ns, r.latency_ms))

    def since(self, t_ns: int) -> list[tuple[int, int, float]]:
        with self.lock:
            return [row for row in self.rows if row[0] >= t_ns]


def _start(layout: str, params_file: Path, logdir: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1"}
    if layout == "2 processes":
        commands = [
            [
                sys.executable,
                "-m",
                f"dli_perception.nodes.{node}",
                "--ros-args",
                "--params-file",
                str(params_file),
            ]
            for node in NODES
        ]
    else:
        worker = [sys.executable, __file__, "--worker", str(params_file)]
        commands = [worker + (["--no-local-frames"] if layout == "1 process, DDS" else [])]
    procs = []
    for i, cmd in enumerate(commands):
        log = open(logdir / f"{layout.replace(' ', '_').replace(',', '')}_{i}.log", "wb")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
    return procs


def measure(layout: str, params_file: Path, scores: Scores, seconds: float, warmup: float, logdir: Path) -> Result:
    procs = _start(layout, params_file, logdir)
    try:
        t0 = time.time_ns()
        deadline = time.monotonic() + START_DEADLINE_S
        while not scores.since(t0):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{layout}: no classification within {START_DEADLINE_S:.0f} s; logs in {logdir}")
            time.sleep(0.2)
        time.sleep(warmup)
        cpu0 = sum(cpu_s(p.pid) for p in procs)
        start_ns = time.time_ns()
        time.sleep(seconds)
        cpu1 = sum(cpu_s(p.pid) for p in procs)
        end_ns = time.time_ns()
        memory = [_memory_kib(p.pid) for p in procs]
        rows = [r for r in scores.since(start_ns) if r[0] <= end_ns]
    finally:
        stop_processes(procs)
    wall = (end_ns - start_ns) / 1e9
    latencies = [(now - stamp) / 1e6 for now, stamp, _ in rows]
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    cpu = cpu1 - cpu0
    return Result(
        layout=layout,
        processes=len(procs),
        cpu_percent=100.0 * cpu / wall,
        cpu_ms_per_frame=1000.0 * cpu / max(len(rows), 1),
        classified_fps=len(rows) / wall,
        latency_p50_ms=statistics.median(latencies) if latencies else float("nan"),
        latency_p95_ms=q[18],
        node_latency_p50_ms=statistics.median(r[2] for r in rows) if rows else float("nan"),
        rss_mib=sum(m[0] for m in memory) / 1024,
        pss_mib=sum(m[1] for m in memory) / 1024,
    )


# -- report -------------------------------------------------------------------------------------------

ROWS = [
    ("processes", "processes", "{:.0f}"),
    ("cpu_percent", "CPU, % of one core", "{:.1f}"),
    ("cpu_ms_per_frame", "CPU per classified frame, ms", "{:.2f}"),
    ("classified_fps", "classified frames/s", "{:.1f}"),
    ("latency_p50_ms", "stamp -> label p50, ms", "{:.2f}"),
    ("latency_p95_ms", "stamp -> label p95, ms", "{:.2f}"),
    ("node_latency_p50_ms", "classifier received -> published p50, ms", "{:.2f}"),
    ("rss_mib", "RSS sum, MiB", "{:.0f}"),
    ("pss_mib", "PSS sum, MiB", "{:.0f}"),
]


def table(results: dict[str, Result]) -> str:
    base = results["2 processes"]
    head = f"{'':42}" + "".join(f"{name:>22}" for name in LAYOUTS) + f"{'hand-off/2p':>13}{'DDS/2p':>9}"
    lines = [head, "-" * len(head)]
    for key, label, fmt in ROWS:
        cells = "".join(f"{fmt.format(getattr(results[n], key)):>22}" for n in LAYOUTS)
        ratios = ""
        for n, width in (("1 process, hand-off", 13), ("1 process, DDS", 9)):
            b = getattr(base, key)
            ratios += f"{getattr(results[n], key) / b:>{width}.2f}" if b else f"{'-':>{width}}"
        lines.append(f"{label:42}{cells}{ratios}")
    return "\n".join(lines)


def _median_result(layout: str, runs: list[Result]) -> Result:
    fields = {k: statistics.median(getattr(r, k) for r in runs) for k in asdict(runs[0]) if k != "layout"}
    return Result(layout=layout, **fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window per layout (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the first label (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the layouts (default 1)")
    parser.add_argument("--size", default="640x480", help="camera frame size (default 640x480)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera rate (default 30)")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: a tiny nearest-colour model)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--no-local-frames", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, local_frames=not args.no_local_frames)

    os.environ["ROS_DOMAIN_ID"] = str(random.randint(101, 200))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from dli_perception import transport

    transport.apply_default_profile()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="runner_bench_") as tmp:
        root = Path(tmp)
        model = args.model_dir
        if model is None:
            sys.path.insert(0, str(REPO / "test"))
            from fixtures_models import build_colour_model_dir

            model = build_colour_model_dir(
                root / "model", ("free", "blocked"), {"free": (0, 200, 0), "blocked": (200, 0, 0)}
            )
        params = root / "params.yaml"
        params.write_text(
            json.dumps(
                {
                    "camera_node": {"ros__parameters": {"width": width, "height": height, "fps": args.fps}},
                    "classifier_node": {
                        "ros__parameters": {"model_dir": str(model), "backend": "onnxruntime", "threads": 1}
                    },
                }
            )
        )
        print(
            f"camera {width}x{height} rgb8 @ {args.fps:g} Hz -> classifier ({model.name}, onnxruntime, "
            "1 thread); "
            f"{args.seconds:g} s per layout after {args.warmup:g} s warm-up, {args.repeat} round(s); "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        scores = Scores()
        runs: dict[str, list[Result]] = {name: [] for name in LAYOUTS}
        try:
            for round_ in range(args.repeat):
                for layout in LAYOUTS:
                    result = measure(layout, params, scores, args.seconds, args.warmup, root)
                    runs[layout].append(result)
                    print(
                        f"  round {round_ + 1} {layout}: {result.cpu_percent:.1f}% CPU, "
                        f"{result.classified_fps:.1f} frames/s, p50 {result.latency_p50_ms:.2f} ms",
                        flush=True,
                    )
        finally:
            scores.close()
    results = {name: _median_result(name, r) for name, r in runs.items()}
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({n: asdict(r) for n, r in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
