"""The recorder's writer queue: the jobs, their outcomes, and which job may be queued when.

One writer thread takes jobs from :class:`JobQueue`. Continuous-capture frames are bounded by
``queue_size`` (one more is dropped, and the caller counts it). Service calls (``~/capture``,
``~/undo``) are bounded by :data:`MAX_WAITING_CALLS` and by time: a call whose jobs ahead would
take longer than its timeout at the writer's recent pace is refused at once. A queued call
waits in :meth:`JobQueue.wait`, a coroutine that holds no thread, for the writer's outcome or
its deadline. Nothing here imports rclpy; :class:`~dli_perception.core.recording.Recorder` runs
the writer over this queue, and the node wakes its executor so waiting calls resume.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any

# Refusal reasons, the keys of the recorder's ``refused_*`` diagnostics counters.
NO_LABEL = "no_label"
INVALID_LABEL = "invalid_label"
NO_FRAME = "no_frame"
STALE_FRAME = "stale_frame"
CLASS_FULL = "class_full"
DUPLICATE = "duplicate"
DATASET_ERROR = "dataset_error"
BAD_FRAME = "bad_frame"
BUSY = "busy"
SHUTTING_DOWN = "shutting_down"
NOTHING_TO_UNDO = "nothing_to_undo"

MAX_WAITING_CALLS = 32
"""Most ``~/capture``/``~/undo`` calls waiting for the writer at once; more are refused as busy."""

PACE_WEIGHT = 0.3
"""Weight of the newest job in the writer's moving-average time per job."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one job: ``reason`` is empty on success, else a refusal key."""

    success: bool
    message: str
    reason: str = ""
    path: str = ""


@dataclass
class Job:
    """A ``"save"`` of ``frame`` under ``label``, or an ``"undo"``; ``reply`` is set for service calls."""

    kind: str
    frame: Any = None
    label: str = ""
    reply: Future | None = None


class NextWake:
    """Awaitable that suspends a coroutine callback until the executor runs it again (its next wake)."""

    def __await__(self):
        yield


class JobQueue:
    """The writer's jobs: frames bounded by ``frames_max``, calls by count and by time. Thread-safe."""

    def __init__(self, frames_max: int, max_calls: int = MAX_WAITING_CALLS) -> None:
        self.queue: queue.Queue[Job] = queue.Queue()  # bounded by the rules below, not by maxsize
        self._frames_max = frames_max
        self._max_calls = max_calls
        self._lock = threading.Lock()
        self.frames_queued = 0
        self.calls_waiting = 0
        self.job_s = 0.0  # moving average of the writer's time per job, seconds

    @property
    def unfinished(self) -> int:
        """Jobs queued or being run (0: the writer is idle and everything asked for is done)."""
        return self.queue.unfinished_tasks

    # -- producers ------------------------------------------------------------------------------
    def put_frame(self, job: Job) -> bool:
        """Queue a continuous-capture frame; False (nothing queued) when ``frames_max`` already wait."""
        with self._lock:
            if self.frames_queued >= self._frames_max:
                return False
            self.frames_queued += 1
            self.queue.put_nowait(job)
            return True

    def submit_call(self, job: Job, timeout_s: float) -> Outcome | None:
        """Queue a service call's job (None), or the busy refusal when it could not be served in time.

        Refused when :data:`MAX_WAITING_CALLS` calls wait, or when the jobs ahead would take longer
        than ``timeout_s`` at the recent pace; a call with nothing ahead is always queued (the pace
        may be one slow write old, and only a job that runs can update it).
        """
        job.reply = Future()
        with self._lock:
            ahead = self.frames_queued + self.calls_waiting
            expected_s = (ahead + 1) * self.job_s
            if ahead >= self._max_calls or (ahead > 0 and expected_s > timeout_s):
                return Outcome(
                    False,
                    f"the writer is busy: {ahead} jobs ahead take about {expected_s:.1f} s, more than "
                    f"write_timeout_s={timeout_s:g} s allows; nothing was done, try again",
                    BUSY,
                )
            self.calls_waiting += 1
            self.queue.put_nowait(job)
        return None

    async def wait(self, job: Job, timeout_s: float, started: float) -> Outcome:
        """The outcome of a queued call, or a busy refusal at ``started + timeout_s`` (monotonic).

        Resumes only when the executor runs it again: the caller wakes the executor when a job
        finishes and, while calls wait, often enough to keep the deadline.
        """
        deadline = started + timeout_s
        try:
            while not job.reply.done() and time.monotonic() < deadline:
                await NextWake()
        finally:
            with self._lock:
                self.calls_waiting -= 1
        if not job.reply.done() and job.reply.cancel():  # still queued: the writer will skip it
            return Outcome(
                False,
                f"the writer did not get to it within write_timeout_s={timeout_s:g} s; nothing was done",
                BUSY,
            )
        if not job.reply.done():
            return Outcome(
                False,
                f"the write takes longer than write_timeout_s={timeout_s:g} s "
                "(slow disk?); it may still complete: check ~/counts",
                BUSY,
            )
        try:
            return job.reply.result()
        except CancelledError:
            return Outcome(False, "the recorder is shutting down; nothing was done", SHUTTING_DOWN)

    # -- the writer thread ----------------------------------------------------------------------
    def take(self, timeout_s: float) -> Job:
        """The next job (raises queue.Empty after ``timeout_s``); pass it to :meth:`start`."""
        return self.queue.get(timeout=timeout_s)

    def start(self, job: Job) -> bool:
        """Whether to run ``job``: False for a call whose caller stopped waiting (then call :meth:`done`)."""
        if job.reply is None:
            with self._lock:
                self.frames_queued -= 1
            return True
        return job.reply.set_running_or_notify_cancel()

    def done(self, took_s: float | None = None) -> None:
        """A taken job is finished; ``took_s`` (when it ran) updates the pace."""
        if took_s is not None:
            with self._lock:
                self.job_s = took_s if self.job_s == 0.0 else (1 - PACE_WEIGHT) * self.job_s + PACE_WEIGHT * took_s
        self.queue.task_done()
