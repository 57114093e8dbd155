"""Counters and recent timings of a live classifier: frames in, dropped, classified, latency, fps.

Each counter is written by one thread (the frame feed, the worker or the loader) and read by
diagnostics and tests; the timing windows keep the latest :data:`LATENCY_WINDOW` results.
"""

from __future__ import annotations

import collections
import math
import time

import numpy as np

LATENCY_WINDOW = 200
"""Latest results the latency percentiles are computed over."""
FPS_WINDOW_S = 2.0
"""Seconds of recent results the fps figure is computed over."""
STAGES = ("transport", "wait", "convert", "preprocess", "inference", "publish")
"""Stages of one frame's way through the classifier, timed for ``~/scores`` and diagnostics."""


class LiveStats:
    """Frame and model counts plus latency, inference, per-stage and fps figures over recent results."""

    def __init__(self) -> None:
        self.received = 0
        self.dropped = 0
        self.without_model = 0
        self.classified = 0
        self.bad = 0
        self.errors = 0
        self.loads = 0
        self.load_failures = 0
        self.max_pending = 0
        self.last_label = ""
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._inference: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._stages: collections.deque[tuple[float, ...]] = collections.deque(maxlen=LATENCY_WINDOW)
        self._done_times: collections.deque[float] = collections.deque(maxlen=1000)

    def record(self, label: str, latency_ms: float, inference_ms: float, stages: tuple[float, ...]) -> None:
        """One frame classified: its label, latency, inference time and :data:`STAGES` times (ms)."""
        self.classified += 1
        self.last_label = label
        self._latencies.append(latency_ms)
        self._inference.append(inference_ms)
        self._stages.append(stages)
        self._done_times.append(time.monotonic())

    def fps(self) -> float:
        """Frames classified per second over the last :data:`FPS_WINDOW_S` seconds."""
        now = time.monotonic()
        recent = [t for t in list(self._done_times) if now - t <= FPS_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def latency_percentiles(self) -> tuple[float, float]:
        """(p50, p95) of frame received -> result published, milliseconds, over recent frames."""
        values = list(self._latencies)
        if not values:
            return (math.nan, math.nan)
        p50, p95 = np.percentile(values, [50, 95])
        return float(p50), float(p95)

    def inference_p50(self) -> float:
        """Median backend time of recent frames, milliseconds (NaN before the first)."""
        values = list(self._inference)
        return float(np.median(values)) if values else math.nan

    def stage_percentiles(self) -> str:
        """``stage=p50`` (milliseconds) of each of :data:`STAGES` over recent frames, one line."""
        rows = list(self._stages)
        if not rows:
            return ""
        p50 = np.median(np.asarray(rows), axis=0)
        return " ".join(f"{name}={v:.2f}" for name, v in zip(STAGES, p50, strict=True))
