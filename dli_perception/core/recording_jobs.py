"""The recorder's parts: its writer queue and jobs, their outcomes, what a job does to the store, its hooks.

One writer thread takes jobs from :class:`JobQueue`. Continuous-capture frames are bounded by
``queue_size`` (one more is dropped, and the caller counts it). Service calls (``~/capture``,
``~/undo``) are bounded by :data:`MAX_WAITING_CALLS` and by time: a call whose jobs ahead would
take longer than its timeout at the writer's recent pace is refused at once. A queued call
waits in :meth:`JobQueue.wait`, a coroutine that holds no thread, for the writer's outcome or
its deadline. Nothing here imports rclpy; :class:`~dli_perception.core.recording.Recorder` runs
the writer over this queue, and the node wakes its executor so waiting calls resume.
:func:`write_frame` and :func:`undo_last` are the writer's two jobs on the dataset store;
:class:`RecorderHooks` is what the recorder asks of its host.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any

from dli_perception.core.contracts import Counts
from dli_perception.core.dataset import CaptureResult, DatasetStore, ManifestEntry
from dli_perception.errors import ClassFullError, DatasetError, ImageConversionError, InvalidLabelError, TargetError

log = logging.getLogger(__name__)

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
NO_TARGET = "no_target"
INVALID_TARGET = "invalid_target"
WRONG_TASK = "wrong_task"

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


def _nothing(*_args: Any) -> None:
    """A hook that does nothing."""


def _to_logging(level: str, text: str) -> None:
    getattr(log, level)("%s", text)


@dataclass
class RecorderHooks:
    """What :class:`Recorder` asks of its host; every hook is optional.

    ``counts``: the per-class counts changed (writer thread, start and close).
    ``replied``: a call's job finished (writer thread): resume the waiting calls now.
    ``calls_waiting``: a call was queued (the recorder's lock held): keep resuming waiting calls
    until :meth:`Recorder.if_no_calls_wait` says none wait, so each is answered at its deadline.
    ``pace``: call :meth:`Recorder.tick` every so many seconds from now on, or stop (None); the lock is held.
    ``log``: one log line, ``level`` being ``"info"``, ``"warning"`` or ``"error"``.
    """

    counts: Callable[[Counts], None] = _nothing
    replied: Callable[[], None] = _nothing
    calls_waiting: Callable[[], None] = _nothing
    pace: Callable[[float | None], None] = _nothing
    log: Callable[[str, str], None] = _to_logging


@dataclass(frozen=True)
class Frame:
    """The newest frame: the message as received, when (monotonic), its stamp and its arrival number."""

    msg: Any
    received: float
    stamp_ns: int
    seq: int


@dataclass
class Job:
    """A ``"save"`` of ``frame`` under ``label`` (or with the regression target ``xy``, or the label set
    ``labels``), or an ``"undo"``; ``reply`` is set for service calls."""

    kind: str
    frame: Any = None
    label: str = ""
    reply: Future | None = None
    xy: tuple[float, float] | None = None
    labels: tuple[str, ...] | None = None


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


# -- what the writer does to the store ---------------------------------------------------------------
def write_frame(store: DatasetStore, job: Job, topic: str) -> CaptureResult | Outcome:
    """Encode and save ``job``'s frame with its target: the store's result, or the refusal (nothing saved)."""
    from dli_perception.core.imaging import to_rgb8

    try:
        encoded = store.encode(to_rgb8(job.frame.msg))
    except ImageConversionError as exc:
        return Outcome(False, f"the frame cannot be converted: {exc}; nothing was saved", BAD_FRAME)
    try:
        if job.xy is not None or job.labels is not None:
            result = store.add_encoded(encoded, None, job.frame.stamp_ns, topic, xy=job.xy, labels=job.labels)
        else:
            result = store.add_encoded(encoded, job.label, job.frame.stamp_ns, topic)
    except ClassFullError as exc:
        return Outcome(False, f"{exc}; nothing was saved", CLASS_FULL)
    except TargetError as exc:
        return Outcome(False, f"target refused: {exc}", INVALID_TARGET)
    except InvalidLabelError as exc:
        return Outcome(False, f"invalid label: {exc}", INVALID_LABEL)
    except DatasetError as exc:
        return Outcome(False, str(exc), DATASET_ERROR)
    if result.duplicate:
        return Outcome(
            False,
            f"duplicate: the frame is identical to {result.file}, already saved; nothing was saved",
            DUPLICATE,
            str(result.path),
        )
    return result


def undo_last(store: DatasetStore) -> ManifestEntry | Outcome:
    """Remove the last saved image: its manifest entry, or the refusal."""
    try:
        removed = store.undo(1)
    except DatasetError as exc:
        return Outcome(False, str(exc), DATASET_ERROR)
    if not removed:
        return Outcome(False, "nothing to undo: the dataset is empty", NOTHING_TO_UNDO)
    return removed[0]
