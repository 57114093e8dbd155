"""Pacing a capture loop: :class:`RateKeeper` schedules frames and counts late and dropped ones."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from dli_perception.errors import ConfigError


class RateKeeper:
    """Paces a capture loop at ``fps`` and counts frames not delivered in time. Pure; the clock is injected.

    Call :meth:`mark` once per due slot, after trying to capture: ``delivered``
    counts frames, ``dropped`` counts due slots where the source had nothing,
    ``late`` counts slots skipped because the loop fell more than one period
    behind (no burst of catch-up frames follows).
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic, window: int = 30) -> None:
        if not fps > 0:
            raise ConfigError(f"fps must be > 0, got {fps}")
        self.period = 1.0 / float(fps)
        self._clock = clock
        self._window = max(2, int(window))
        self.reset()

    def reset(self) -> None:
        """Forget counters and restart the schedule at the next :meth:`mark`."""
        self._t0: float | None = None
        self._slot = 0
        self.delivered = 0
        self.dropped = 0
        self.late = 0
        self._times: deque[float] = deque(maxlen=self._window)

    @property
    def next_due(self) -> float | None:
        """Clock time the next frame is due, ``None`` before the first :meth:`mark` (due now)."""
        return None if self._t0 is None else self._t0 + self._slot * self.period

    def time_until_due(self) -> float:
        """Seconds until the next frame is due (0 when due or overdue)."""
        due = self.next_due
        return 0.0 if due is None else max(0.0, due - self._clock())

    def due(self) -> bool:
        due = self.next_due
        return due is None or self._clock() >= due

    def mark(self, delivered: bool) -> None:
        """Close the current slot: ``delivered`` says whether a frame was captured for it."""
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
            self._slot = 0
        current = math.floor((now - self._t0) / self.period + 1e-9)
        if current > self._slot:
            self.late += current - self._slot
            self._slot = current
        self._slot += 1
        if delivered:
            self.delivered += 1
            self._times.append(now)
        else:
            self.dropped += 1

    @property
    def measured_fps(self) -> float:
        """Delivered frames per second over the last ``window`` frames (0 until two frames)."""
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0
