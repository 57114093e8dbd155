"""Rigs for the reliability tests and ``benchmarks/reliability.py``: real nodes, topics, one private context.

:class:`ClassifierRig` is a classifier_node with a frame/model publisher and collectors for its
results and diagnostics; :class:`Teacher` (from ``recorder_client``) drives a recorder_node.
Waits poll with deadlines; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from graphutil import DEADLINE_S, DISCOVERY_S, Collector, Spinner, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from recorder_client import Teacher
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dli_perception.core.dataset import IMAGE_EXTENSIONS, MANIFEST_NAME
from dli_perception.core.imaging import cv2_to_imgmsg
from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA


def frame_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> Image:
    """An rgb8 Image of ``rgb`` stamped ``stamp_ns``."""
    msg = cv2_to_imgmsg(np.ascontiguousarray(rgb), encoding="rgb8")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def stamp_of(result: dict) -> int:
    return result["stamp"]["sec"] * 1_000_000_000 + result["stamp"]["nanosec"]


def diagnostics_of(collector: Collector, suffix: str) -> dict[str, Any] | None:
    """The newest DiagnosticStatus whose name ends with ``suffix``, as {message, level, key: value}."""
    for array in reversed(list(collector.msgs)):
        for status in array.status:
            if status.name.endswith(suffix):
                return {
                    "message": status.message,
                    "level": status.level,
                    **{kv.key: kv.value for kv in status.values},
                }
    return None


class ClassifierRig:
    """classifier_node + a frame/model publisher + collectors for scores, classes and diagnostics."""

    def __init__(self, context, spinner: Spinner, **params: Any) -> None:
        from dli_perception.nodes.classifier_node import ClassifierNode

        values = {"backend": "onnxruntime", "threads": 1, "smoothing": "none", **params}
        self.node = spinner.add(
            ClassifierNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        )
        self.source = spinner.add(Node("frame_source", context=context))
        self.image_pub = self.source.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.model_pub = self.source.create_publisher(String, "model_updated", EVENTS)
        self.scores = spinner.add(Collector(context, String, "/classifier_node/scores", EVENTS, name="scores"))
        self.classes = spinner.add(Collector(context, String, "/classifier_node/classes", LATCHED, name="classes"))
        self.diags = spinner.add(Collector(context, DiagnosticArray, "/diagnostics", EVENTS, name="diags"))
        self.sent = 0

    def ready(self) -> None:
        node = self.node
        assert wait_for(
            lambda: (
                node.model is not None
                and self.image_pub.get_subscription_count() > 0
                and self.model_pub.get_subscription_count() > 0
                and node.scores_pub.get_subscription_count() > 0
            ),
            DISCOVERY_S,
        ), f"classifier not ready: {node.status()!r}, last error {node.last_error!r}"

    def processed(self) -> int:
        """Frames the worker finished with (classified, refused as bad, or failed)."""
        n = self.node
        return n.classified + n.bad + n.errors

    def send_and_wait(self, msg: Image) -> None:
        """Publish one frame and wait until the node received and processed it (no frame is ever dropped)."""
        self.image_pub.publish(msg)
        self.sent += 1
        n = self.node
        assert wait_for(lambda: n.received == self.sent and self.processed() == self.sent, DEADLINE_S), (
            f"frame {self.sent} not processed: received {n.received}, classified {n.classified}, "
            f"bad {n.bad}, "
            f"errors {n.errors}, dropped {n.dropped}; last error {n.last_error!r}"
        )

    def results(self) -> list[dict]:
        return [json.loads(m.data) for m in list(self.scores.msgs)]

    def result_for(self, stamp_ns: int) -> dict | None:
        for r in reversed(self.results()):
            if stamp_of(r) == stamp_ns:
                return r
        return None

    def classify(self, rgb: np.ndarray, stamp_ns: int) -> dict:
        """Publish one good frame and return its result."""
        self.send_and_wait(frame_msg(rgb, stamp_ns))
        assert wait_for(lambda: self.result_for(stamp_ns) is not None, DEADLINE_S), self.node.last_error
        return self.result_for(stamp_ns)

    def current_classes(self) -> list[str] | None:
        msgs = list(self.classes.msgs)
        return json.loads(msgs[-1].data) if msgs else None

    def diagnostics(self) -> dict[str, Any] | None:
        return diagnostics_of(self.diags, "classifier_node")


def recorder_node(context, root: Path, ns: str = "", **params: Any):
    from dli_perception.nodes.recorder_node import RecorderNode

    values = {"dataset_dir": str(root), "max_frame_age_s": 60.0, **params}
    return RecorderNode(
        context=context,
        namespace=ns or "/",
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
    )


def deliver_frame(recorder, teacher: Teacher, msg: Image) -> None:
    """Publish ``msg`` until the recorder holds it as its newest frame (matched by stamp)."""
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def step() -> bool:
        frame = recorder._frame
        if frame is not None and (frame.msg.header.stamp.sec, frame.msg.header.stamp.nanosec) == stamp:
            return True
        teacher.image_pub.publish(msg)
        return False

    assert wait_for(step, DISCOVERY_S, interval=0.05), "the recorder never received the frame"


# --------------------------------------------------------------------------- dataset checks


def disk_images(root: Path) -> Counter:
    """Image files per class directory, as ImageFolder sees them."""
    return Counter(p.parent.name for p in root.glob("*/*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def manifest(root: Path) -> list[dict]:
    path = root / MANIFEST_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def assert_manifest_matches_files(root: Path) -> Counter:
    """Every manifest line names an existing file, every image file has exactly one line; returns counts."""
    lines = manifest(root)
    files = {str(p.relative_to(root)) for p in root.glob("*/*") if p.suffix.lower() in IMAGE_EXTENSIONS}
    listed = [e["file"] for e in lines]
    assert len(listed) == len(set(listed)), "duplicate manifest lines"
    assert set(listed) == files, (sorted(set(listed) ^ files)[:10], len(listed), len(files))
    counts = Counter(e["class"] for e in lines)
    assert counts == disk_images(root)
    return counts


def files_outside(top: Path, inside: Path) -> list[Path]:
    """Every file or symbolic link under ``top`` (links not followed) whose path is not under ``inside``."""
    inside = inside.absolute()
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            p = Path(dirpath) / name
            if not p.absolute().is_relative_to(inside):
                out.append(p)
    return sorted(out)


# --------------------------------------------------------------------------- processes


class RssSampler:
    """Samples a process's VmRSS (kB) every ``period_s`` on a thread, with the value of ``counter()`` then."""

    def __init__(self, pid: int, counter, period_s: float = 0.25) -> None:
        from memprobe import rss_kb

        self._rss = lambda: rss_kb(pid)
        self._counter = counter
        self.samples: list[tuple[float, int, int]] = []  # (monotonic s, counter, rss kB)
        self._stop = threading.Event()
        self._period = period_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self._counter(), self._rss()))
            except (OSError, KeyError):
                return
            self._stop.wait(self._period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def rss_at(self, count: int) -> int:
        """RSS of the first sample taken at or after ``count`` (kB)."""
        for _, c, rss in self.samples:
            if c >= count:
                return rss
        return self.samples[-1][2]


def sigterm_all(procs) -> list[int]:
    """Send SIGTERM to every process at once (as a supervisor does) and return their exit codes."""
    for p in procs:
        p.send(signal.SIGTERM)
    return [p.wait(timeout=30) for p in procs]
