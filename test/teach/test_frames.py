"""The live view's frame encoder: newest frame only, overlay while it is fresh, nothing without watchers."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from dli_perception.core.imaging import cv2_to_imgmsg
from dli_perception.teach import frames
from dli_perception.teach.frames import FrameEncoder


def _msg(value: int, stamp_ns: int):
    msg = cv2_to_imgmsg(np.full((48, 64, 3), value, np.uint8), encoding="rgb8")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def _collect(encoder_max_fps: float = 5.0):
    got: list = []
    done = threading.Event()

    def on_frame(frame) -> None:
        got.append(frame)
        done.set()

    return FrameEncoder(on_frame, max_fps=encoder_max_fps), got, done


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_nothing_is_encoded_without_watchers_then_only_the_newest():
    encoder, got, _ = _collect(encoder_max_fps=5.0)
    try:
        encoder.on_raw(_msg(10, 1_000))
        time.sleep(0.3)
        assert got == []  # no page watches: no work
        encoder.watchers = 1
        encoder.wake()
        assert _wait(lambda: len(got) == 1)
        for i in range(20):  # far faster than max_fps: the stale ones are dropped, never queued
            encoder.on_raw(_msg(20 + i, 2_000 + i))
        assert _wait(lambda: got[-1].stamp_ns == 2_019)
        assert len(got) <= 3, [f.stamp_ns for f in got]
        assert got[-1].source == "camera"
        pixels = cv2.imdecode(np.frombuffer(got[-1].jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert pixels.shape == (48, 64, 3) and abs(int(pixels.mean()) - 39) <= 2  # a real JPEG of that frame
    finally:
        encoder.close()


def test_overlay_is_shown_while_fresh_then_the_camera_again(monkeypatch):
    monkeypatch.setattr(frames, "OVERLAY_FRESH_S", 0.3)
    encoder, got, _ = _collect(encoder_max_fps=50.0)
    encoder.watchers = 1
    try:
        encoder.on_overlay(_msg(200, 5_000))
        assert _wait(lambda: got and got[-1].source == "overlay")
        time.sleep(0.4)  # the classifier stopped: its overlay goes stale
        encoder.on_raw(_msg(30, 6_000))
        assert _wait(lambda: got[-1].source == "camera" and got[-1].stamp_ns == 6_000)
    finally:
        encoder.close()
