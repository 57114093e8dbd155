"""Camera frames publish -> receive: rate, delivered fraction and latency, with the shipped Fast DDS
profile and, as the baseline in the same run, Fast DDS's builtin transports.

For 640x480 and 1280x720 rgb8 at 30 Hz (sensor-data QoS), in one process (camera_node and a
subscriber node in one executor) and across processes (camera_node entry point + subscriber here):
latency = receive time - header stamp (the capture time), so it includes rendering the synthetic
scene, conversion, publishing, transport and deserialisation. ``raw-transport`` isolates the
transport: another process publishes one pre-built frame stamped just before each publish. Each configuration runs in a fresh process because Fast DDS reads
its profile when the first participant is created.

    .venv/bin/python benchmarks/transport.py [--seconds 6] [--sizes 640x480,1280x720]

``--heap-rounds N`` measures instead the shipped profile with and without
``keep_frame_buffers`` (frame-sized buffers reused from glibc's heap instead of fresh mmaps),
alternated for N rounds, and prints the ranges.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _raw_publisher(size: str, fps: float, seconds: float) -> None:
    """Publish one pre-built frame at ``fps``, stamped just before each publish (transport only)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from dli_perception import transport
    from dli_perception.core.imaging import cv2_to_imgmsg
    from dli_perception.nodes.qos import SENSOR_DATA

    width, height = (int(v) for v in size.split("x"))
    transport.apply_default_profile()  # honours DLI_PERCEPTION_FASTDDS_PROFILE=0 for the baseline
    transport.keep_frame_buffers()  # as every node process does (honours DLI_PERCEPTION_MALLOC_TUNING=0)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("transport_bench_raw_pub")
    pub = node.create_publisher(type(cv2_to_imgmsg(np.zeros((1, 1, 3), np.uint8), "rgb8")), "image_raw", SENSOR_DATA)
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = cv2_to_imgmsg(frame, "rgb8")
    period = 1.0 / fps
    next_t = time.monotonic()
    end = next_t + seconds
    build_ms, publish_ms = [], []
    for _ in range(20):  # what a camera pays per frame to build the message (timed apart from the sending)
        t0 = time.perf_counter()
        cv2_to_imgmsg(frame, "rgb8")
        build_ms.append((time.perf_counter() - t0) * 1e3)
    stop = []  # SIGTERM from the subscriber ends the loop; the breakdown is printed on the way out
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    next_t = time.monotonic()
    end = next_t + seconds
    cpu0 = time.process_time()
    while time.monotonic() < end and not stop:
        next_t += period
        t1 = time.perf_counter()
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        pub.publish(msg)
        publish_ms.append((time.perf_counter() - t1) * 1e3)
        time.sleep(max(0.0, next_t - time.monotonic()))
    cpu = time.process_time() - cpu0
    node.destroy_node()
    rclpy.try_shutdown()
    print(
        json.dumps(
            {
                "build_ms_p50": statistics.median(build_ms),
                "publish_ms_p50": statistics.median(publish_ms),
                "pub_cpu_ms_per_frame": 1e3 * cpu / max(len(publish_ms), 1),
            }
        ),
        flush=True,
    )


def _worker(mode: str, size: str, seconds: float, fps: float) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from dli_perception import transport
    from dli_perception.nodes.qos import EVENTS, SENSOR_DATA

    width, height = (int(v) for v in size.split("x"))
    transport.apply_default_profile()  # honours DLI_PERCEPTION_FASTDDS_PROFILE=0 for the baseline
    transport.keep_frame_buffers()  # as every node process does (honours DLI_PERCEPTION_MALLOC_TUNING=0)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    from dli_perception.core.imaging import to_rgb8

    received: list[tuple[int, int]] = []
    last_msgs: collections.deque = collections.deque(maxlen=20)
    published: list[tuple[int, int]] = []  # (receive time ns, frames_published) from the camera's diagnostics

    class Sink(Node):
        def __init__(self) -> None:
            super().__init__("transport_bench_sink")
            self.create_subscription(Image, "image_raw", self.on_image, SENSOR_DATA)
            self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, EVENTS)

        def on_image(self, msg: Image) -> None:
            now = time.time_ns()
            received.append((now, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec))
            last_msgs.append(msg)  # converted after the window, so the callback stays as light as before

        def on_diagnostics(self, msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.endswith("camera_node"):
                    values = {kv.key: kv.value for kv in status.values}
                    published.append((time.time_ns(), int(values["frames_published"])))

    params = [("width", width), ("height", height), ("fps", fps), ("synthetic.scene_period_s", 1.0)]
    sink = Sink()
    executor = SingleThreadedExecutor()  # least overhead per frame taken
    executor.add_node(sink)
    camera = proc = None
    if mode == "raw-transport":
        proc = subprocess.Popen(
            [sys.executable, __file__, "--raw-publisher", size, str(fps), str(seconds + 25)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    elif mode == "in-process":
        from rclpy.parameter import Parameter

        from dli_perception.nodes.camera_node import CameraNode

        camera = CameraNode(parameter_overrides=[Parameter(k, value=v) for k, v in params])
        executor.add_node(camera)
    else:
        args = [a for k, v in params for a in ("-p", f"{k}:={v}")]
        exe = Path(sys.prefix) / "bin" / "camera_node"
        proc = subprocess.Popen([str(exe), "--ros-args", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20.0
    while not received and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    warm, warm_diag = len(received), len(published)
    start = time.monotonic()
    cpu0 = time.process_time()
    while time.monotonic() - start < seconds or (mode != "raw-transport" and len(published) < warm_diag + 2):
        executor.spin_once(timeout_sec=0.05)
        if time.monotonic() - start > seconds + 10:
            break
    # The window runs between two diagnostics reports of the camera, so frames published and
    # frames received are counted over the same span.
    diag = published[warm_diag:]
    if mode == "raw-transport":  # a fixed-rate publisher: sent = elapsed time x rate
        window = received[warm:]
        sent = round((window[-1][1] - window[0][1]) / 1e9 * fps) + 1 if len(window) > 1 else 0
    elif len(diag) >= 2:
        (t0, p0), (t1, p1) = diag[0], diag[-1]
        window = [r for r in received if t0 < r[0] <= t1]
        sent = p1 - p0
    else:
        window, sent = received, 0
    result = {"mode": mode, "size": size, "fps_target": fps, "received": len(window), "published": sent}
    # Subscriber process CPU (executor, take, conversion; in-process also the camera) per frame received.
    result["sub_cpu_ms_per_frame"] = 1e3 * (time.process_time() - cpu0) / max(len(received) - warm, 1)
    convert_ms = []
    for msg in last_msgs:  # the subscriber's conversion to an array (a view when rgb8)
        t = time.perf_counter()
        to_rgb8(msg)
        convert_ms.append((time.perf_counter() - t) * 1e3)
    result["convert_ms_p50"] = statistics.median(convert_ms) if convert_ms else None
    if camera is not None:
        camera.destroy_node()
    if proc is not None:
        if mode == "raw-transport":  # it prints its breakdown when told to stop
            proc.send_signal(15)
            out, _ = proc.communicate(timeout=30)
            lines = out.strip().splitlines()
            result.update(json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {})
        else:
            proc.send_signal(2)
            proc.wait(timeout=15)
    sink.destroy_node()
    executor.shutdown()
    rclpy.try_shutdown()
    if len(window) >= 2:
        lat = sorted((r - s) / 1e6 for r, s in window)
        result.update(
            rate_hz=(len(window) - 1) / ((window[-1][0] - window[0][0]) / 1e9),
            latency_mean_ms=statistics.fmean(lat),
            latency_p50_ms=lat[len(lat) // 2],
            latency_p95_ms=lat[min(len(lat) - 1, int(0.95 * len(lat)))],
        )
    else:
        result.update(rate_hz=len(window) / seconds, latency_mean_ms=None, latency_p50_ms=None, latency_p95_ms=None)
    result["delivered_fraction"] = min(1.0, len(window) / sent) if sent else 0.0
    return result


def run_configuration(mode: str, size: str, profile: bool, seconds: float, fps: float, heap: bool = True) -> dict:
    """Measure one configuration in a fresh process; returns the result dict.

    ``heap=False`` runs every process of it with glibc's default allocator thresholds
    (``DLI_PERCEPTION_MALLOC_TUNING=0``): the baseline of :func:`dli_perception.transport.keep_frame_buffers`.
    """
    from dli_perception import transport

    env = dict(os.environ)
    for name in transport.PROFILE_ENVS:  # Fast DDS 3 and Fast DDS 2 (Humble, Jazzy) variables
        env.pop(name, None)
    env["DLI_PERCEPTION_FASTDDS_PROFILE"] = "1" if profile else "0"
    env[transport.ALLOCATOR_OPT_OUT_ENV] = "1" if heap else "0"
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, size, str(seconds), str(fps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 90,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {mode} {size} failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["transport"] = ("shipped profile" if profile else "builtin (baseline)") + ("" if heap else ", mmap")
    return result


def heap_rounds(args: argparse.Namespace) -> int:
    """Frame buffers kept in the heap vs glibc's default (fresh mmaps), alternated in the same run."""
    print(
        f"{'size':>9} {'mode':>13} {'allocator':>10} {'got/sent':>9} {'p50 ms':>7} {'p95 ms':>7} {'sub CPU':>8}"
        f" {'publish()':>9}"
    )
    summary: dict[tuple[str, str, bool], list[dict]] = {}
    for r in range(args.heap_rounds):
        for size in args.sizes.split(","):
            for mode in args.modes.split(","):
                for heap in (False, True) if r % 2 == 0 else (True, False):
                    row = run_configuration(mode, size, True, args.seconds, args.fps, heap=heap)
                    summary.setdefault((size, mode, heap), []).append(row)
                    print(
                        f"{size:>9} {mode:>13} {'heap' if heap else 'mmap':>10} "
                        f"{row['received']:>4}/{row['published']:<4} {_fmt(row['latency_p50_ms'], '7.2f')} "
                        f"{_fmt(row['latency_p95_ms'], '7.2f')} {row['sub_cpu_ms_per_frame']:8.2f} "
                        f"{_fmt(row.get('publish_ms_p50'), '9.2f')}",
                        flush=True,
                    )
    print("\nranges over the rounds (mmap -> heap):")
    for (size, mode, heap), rows in summary.items():
        if heap:
            continue
        for key in ("latency_p50_ms", "latency_p95_ms", "sub_cpu_ms_per_frame"):
            old = [x[key] for x in rows if x[key] is not None]
            new = [x[key] for x in summary[(size, mode, True)] if x[key] is not None]
            if old and new:
                print(
                    f"  {size:>9} {mode:>13} {key:>21}: {min(old):.2f}-{max(old):.2f} -> {min(new):.2f}-{max(new):.2f}"
                    f" (median ratio {statistics.median(new) / statistics.median(old):.2f})"
                )
    return 0


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement window per configuration")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--modes", default="in-process,cross-process,raw-transport")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--heap-rounds",
        type=int,
        default=0,
        help="instead of the table: N rounds alternating the shipped profile with and without the frame-buffer"
        " heap (DLI_PERCEPTION_MALLOC_TUNING=0) for --modes and --sizes, each round in both orders",
    )
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--raw-publisher", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_publisher:
        size, fps, seconds = args.raw_publisher
        _raw_publisher(size, float(fps), float(seconds))
        return 0
    if args.worker:
        mode, size, seconds, fps = args.worker
        print(json.dumps(_worker(mode, size, float(seconds), float(fps))))
        return 0
    if args.heap_rounds:
        return heap_rounds(args)
    rows = []
    for size in args.sizes.split(","):
        for mode in args.modes.split(","):
            for profile in (False, True):
                rows.append(run_configuration(mode, size, profile, args.seconds, args.fps))
    header = (
        f"{'size':>9} {'mode':>13} {'transport':>20} {'rate Hz':>8} {'sent':>5} {'got':>5} {'delivered':>9}"
        f" {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'sub CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size']:>9} {r['mode']:>13} {r['transport']:>20} {r['rate_hz']:8.1f} {r['published']:5d} "
            f"{r['received']:5d} {r['delivered_fraction']:9.1%} {_fmt(r['latency_mean_ms'], '8.2f')} "
            f"{_fmt(r['latency_p50_ms'], '8.2f')} {_fmt(r['latency_p95_ms'], '8.2f')} {r['sub_cpu_ms_per_frame']:8.2f}"
        )
    print(
        "\nsub CPU: the subscriber process's CPU time per frame received, ms (in-process: with the camera)."
        "\nraw-transport breakdown (p50, ms): message built from an array | publish() call | publisher CPU per"
        " frame | stamp -> subscriber callback (the latency) | callback's conversion to an array:"
    )
    for r in rows:
        if r["mode"] == "raw-transport" and "build_ms_p50" in r:
            print(
                f"  {r['size']:>9} {r['transport']:>20}: {r['build_ms_p50']:.2f} | {r['publish_ms_p50']:.2f} | "
                f"{r['pub_cpu_ms_per_frame']:.2f} | {_fmt(r['latency_p50_ms'], '.2f')} | {_fmt(r['convert_ms_p50'], '.3f')}"
            )
    print("\nratio shipped/builtin (delivered frames):")
    for size in args.sizes.split(","):
        for mode in args.modes.split(","):
            base, ours = (
                next(r for r in rows if r["size"] == size and r["mode"] == mode and r["transport"] == t)
                for t in ("builtin (baseline)", "shipped profile")
            )
            ratio = ours["received"] / base["received"] if base["received"] else float("inf")
            print(f"  {size:>9} {mode:>13}: {ours['received']} vs {base['received']} frames -> x{ratio:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
