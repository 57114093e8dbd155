"""Rigs for the reliability tests and ``benchmarks/reliability.py``: real nodes, topics, one private context.

:class:`~classifier_rig.ClassifierRig` drives a classifier_node (shared with the node tests), the
package's graph client (:func:`graphutil.graph_client`) a recorder_node, and a
:class:`~graphutil.FrameSource` sends it frames; here are the recorder and file-system helpers.
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

from graphutil import DISCOVERY_S, FrameSource, wait_for
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from dli_perception.core.dataset import IMAGE_EXTENSIONS, MANIFEST_NAME


def recorder_node(context, root: Path, ns: str = "", **params: Any):
    from dli_perception.nodes.recorder_node import RecorderNode

    values = {"dataset_dir": str(root), "max_frame_age_s": 60.0, **params}
    return RecorderNode(
        context=context,
        namespace=ns or "/",
        parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
    )


def deliver_frame(recorder, source: FrameSource, msg: Image) -> None:
    """Publish ``msg`` until the recorder holds it as its newest frame (matched by stamp)."""
    stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def step() -> bool:
        frame = recorder._frame
        if frame is not None and (frame.msg.header.stamp.sec, frame.msg.header.stamp.nanosec) == stamp:
            return True
        source.image_pub.publish(msg)
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
