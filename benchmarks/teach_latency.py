"""Teach station live view: frames per second and frame stamp -> shown in the page, beside the raw topic.

camera_node (synthetic, 640x480 rgb8 at 30 Hz) runs as its own process. In this process, in the same
run: a plain rclpy subscriber measures the raw topic (receive time - header stamp), which is the
baseline; the teach station's server (``TeachServer``, as ``dli-perception teach --connect`` runs it)
serves the page to headless Chromium, whose JavaScript records, for every frame, when it was received
and drawn on the canvas (``window.teachStats``). Latency in the page = drawn - header stamp (same
machine, same clock), so it includes capture rendering, DDS, JPEG encoding, the WebSocket, decoding
and drawing. Targets: >= 10 fps and a median <= 150 ms (p95 reported beside the raw topic's).

    .venv/bin/python benchmarks/teach_latency.py [--seconds 10] [--size 640x480] [--max-fps 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test" / "teach"))

TARGET_FPS = 10.0
TARGET_LATENCY_MS = 150.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class RawProbe:
    """Receive time - header stamp of every image_raw frame, in a private context."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image

        from dli_perception.nodes.qos import SENSOR_DATA

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("teach_latency_raw_probe", context=self.context)
        self.samples: list[tuple[float, float]] = []  # (receive monotonic, latency ms)
        self.recording = False
        self.node.create_subscription(Image, "image_raw", self._on_image, SENSOR_DATA)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on_image(self, msg) -> None:
        now = time.time_ns()
        if self.recording:
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            self.samples.append((time.monotonic(), (now - stamp) / 1e6))

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.node.destroy_node()
        self.context.try_shutdown()


def run(seconds: float, size: str, max_fps: float, camera_fps: float) -> dict:
    from browser import CHROMIUM_ARGS, chromium_path
    from playwright.sync_api import sync_playwright

    from dli_perception import transport
    from dli_perception.teach.server import ServerOptions, TeachServer

    width, height = (int(v) for v in size.split("x"))
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    transport.apply_default_profile()
    camera = subprocess.Popen(
        [str(Path(sys.prefix) / "bin" / "camera_node"), "--ros-args", "-p", f"width:={width}", "-p",
         f"height:={height}", "-p", f"fps:={camera_fps}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    probe = RawProbe()
    server = TeachServer(ServerOptions(port=0, max_fps=max_fps))
    try:
        url = server.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.wait_for_function("() => window.teachStats && window.teachStats.drawn > 10", timeout=60_000)
            page.evaluate("() => { window.teachStats.frames = []; window.teachStats.max = 100000; }")
            probe.recording = True
            t0 = time.monotonic()
            time.sleep(seconds)
            probe.recording = False
            elapsed = time.monotonic() - t0
            frames = page.evaluate("() => window.teachStats.frames")
            browser.close()
    finally:
        server.stop()
        probe.close()
        camera.terminate()
        camera.wait(timeout=15)
    raw = [lat for _, lat in probe.samples]
    drawn = [f["drawn"] - f["stamp_ms"] for f in frames]
    received = [f["received"] - f["stamp_ms"] for f in frames]
    encoded = [f["encoded_ms"] - f["stamp_ms"] for f in frames]
    sent = [f["sent_ms"] - f["stamp_ms"] for f in frames]
    page_fps = len(frames) / elapsed
    raw_fps = len(raw) / elapsed
    result = {
        "size": size,
        "camera_fps": camera_fps,
        "max_fps": max_fps,
        "seconds": round(elapsed, 2),
        "raw_topic": {
            "fps": round(raw_fps, 2),
            "p50_ms": round(_pct(raw, 0.5), 2),
            "p95_ms": round(_pct(raw, 0.95), 2),
        },
        "page": {
            "fps": round(page_fps, 2),
            "encoded_p50_ms": round(_pct(encoded, 0.5), 2),
            "sent_p50_ms": round(_pct(sent, 0.5), 2),
            "received_p50_ms": round(_pct(received, 0.5), 2),
            "shown_p50_ms": round(_pct(drawn, 0.5), 2),
            "shown_p95_ms": round(_pct(drawn, 0.95), 2),
            "shown_mean_ms": round(statistics.fmean(drawn), 2) if drawn else None,
        },
    }
    result["added_p50_ms"] = round(result["page"]["shown_p50_ms"] - result["raw_topic"]["p50_ms"], 2)
    result["meets_targets"] = page_fps >= TARGET_FPS and result["page"]["shown_p50_ms"] <= TARGET_LATENCY_MS
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--camera-fps", type=float, default=30.0)
    parser.add_argument("--max-fps", type=float, default=20.0, help="the station's --max-fps (its default: 20)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    r = run(args.seconds, args.size, args.max_fps, args.camera_fps)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    raw, page = r["raw_topic"], r["page"]
    print(f"teach station live view, {r['size']} camera at {r['camera_fps']:g} Hz, station --max-fps {r['max_fps']:g}, "
          f"{r['seconds']:g} s")  # fmt: skip
    print(f"{'':28}{'fps':>8}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'raw topic (rclpy, baseline)':28}{raw['fps']:>8.1f}{raw['p50_ms']:>10.1f}{raw['p95_ms']:>10.1f}")
    print(f"{'shown in the page':28}{page['fps']:>8.1f}{page['shown_p50_ms']:>10.1f}{page['shown_p95_ms']:>10.1f}")
    print(f"added by the station (p50): {r['added_p50_ms']:.1f} ms")
    print(f"stamp -> (p50 ms): JPEG encoded {page['encoded_p50_ms']:.1f}, sent {page['sent_p50_ms']:.1f}, "
          f"received by the page {page['received_p50_ms']:.1f}, drawn {page['shown_p50_ms']:.1f}")  # fmt: skip
    print(
        f"targets (>= {TARGET_FPS:g} fps, p50 <= {TARGET_LATENCY_MS:g} ms): {'met' if r['meets_targets'] else 'NOT met'}"
        f"; p95 {page['shown_p95_ms']:.0f} ms against the raw topic's {raw['p95_ms']:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
