"""What a subscriber pays to take one camera frame: typed take (rclpy's message) vs raw take (CDR bytes).

Another process publishes pre-built rgb8 frames at 30 Hz (``benchmarks/transport.py``'s raw
publisher, shipped Fast DDS profile); this process waits in its own wait set, as the classifier's
worker does, and takes each frame itself, alternating a typed take (deserialised into a
sensor_msgs/Image, then ``to_rgb8``, a view) and a raw take (the serialised bytes, then a numpy
view of the pixels at the end of the CDR). Each configuration runs with the frame-buffer heap
(``transport.keep_frame_buffers``) and without it (glibc's default), alternated for ``--rounds``.

    .venv/bin/python benchmarks/take.py [--size 1280x720] [--rounds 2] [--seconds 6]
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

HERE = Path(__file__).resolve().parent


def _worker(size: str, seconds: float) -> dict:
    import numpy as np
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from dli_perception import transport
    from dli_perception.core.imaging import to_rgb8
    from dli_perception.nodes.framegate import FrameWaiter
    from dli_perception.nodes.qos import SENSOR_DATA

    transport.apply_default_profile()
    heap = transport.keep_frame_buffers()  # honours DLI_PERCEPTION_MALLOC_TUNING=0 (also in the publisher)
    width, height = (int(v) for v in size.split("x"))
    pixels = width * height * 3
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("take_bench")
    sub = node.create_subscription(Image, "image_raw", lambda _msg: None, SENSOR_DATA)
    waiter = FrameWaiter(sub, node.context)
    pub = subprocess.Popen(
        [sys.executable, str(HERE / "transport.py"), "--raw-publisher", size, "30", str(seconds + 20)],
        stdout=subprocess.DEVNULL,
    )
    took: dict[bool, list[float]] = {False: [], True: []}
    n = 0
    deadline = time.monotonic() + 20.0  # discovery
    measuring_until = None
    try:
        while time.monotonic() < (measuring_until or deadline):
            waiter.wait(0.5)
            raw = n % 2 == 1
            t0 = time.perf_counter()
            with sub.handle:
                got = sub.handle.take_message(Image, raw)
            if not got:
                continue
            if raw:
                data = got[0]
                np.frombuffer(data, np.uint8, pixels, len(data) - pixels).reshape(height, width, 3)
            else:
                to_rgb8(got[0])
            dt = (time.perf_counter() - t0) * 1e3
            n += 1
            if measuring_until is None:
                measuring_until = time.monotonic() + seconds + 1.0
            elif n > 20:  # after a warm-up
                took[raw].append(dt)
    finally:
        pub.terminate()
        pub.wait(timeout=30)
        waiter.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return {
        "heap": heap,
        "typed_p50_ms": statistics.median(took[False]) if took[False] else None,
        "raw_p50_ms": statistics.median(took[True]) if took[True] else None,
        "frames": len(took[False]) + len(took[True]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.size, args.seconds)))
        return 0
    print(f"{args.size} at 30 Hz, take + view of the pixels, p50 ms:")
    for r in range(args.rounds):
        for heap in (False, True) if r % 2 == 0 else (True, False):
            env = dict(os.environ, DLI_PERCEPTION_MALLOC_TUNING="1" if heap else "0")
            cmd = [sys.executable, __file__, "--worker", "--size", args.size, "--seconds", str(args.seconds)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.seconds + 90)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            m = json.loads(out.stdout.strip().splitlines()[-1])
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            print(
                f"  round {r + 1} {'heap' if m['heap'] else 'mmap'}: typed {fmt(m['typed_p50_ms'])}, "
                f"raw {fmt(m['raw_p50_ms'])} ({m['frames']} frames)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
