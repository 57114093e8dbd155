"""The recorder without ROS: labelled frames into a :class:`~dli_perception.core.dataset.DatasetStore`.

:class:`Recorder` keeps the newest frame and the current teach label, decides whether a capture
may be saved (label, frame age, class limit), and runs one writer thread that is the only code
touching the store: it encodes and writes frames, undoes the last capture, and caches the
per-class counts after every change, so nothing else ever waits for a slow store.

Captures and undos asked for by a caller (:meth:`Recorder.capture`, :meth:`Recorder.undo`) are
coroutines that hold no thread while they wait; each is answered within ``write_timeout_s`` with
the writer's outcome or a ``busy`` refusal that says whether anything happened (the admission
rules are in :mod:`~dli_perception.core.recording_jobs`). Continuous recording queues the newest
frame on each :meth:`Recorder.tick`, at most once per frame, and drops (and counts) frames the
writer cannot keep up with.

The host (the ROS node) supplies :class:`RecorderHooks`: where counts go, how to wake waiting
calls, how to pace the ticks, and where log lines go. Every refusal is counted by its reason.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from dli_perception.core.contracts import TOTAL_KEY, Counts
from dli_perception.core.dataset import DatasetStore, is_no_label, validate_label
from dli_perception.core.logtext import quoted
from dli_perception.core.recording_jobs import (
    BAD_FRAME,
    BUSY,
    CLASS_FULL,
    DATASET_ERROR,
    INVALID_LABEL,
    NO_FRAME,
    NO_LABEL,
    SHUTTING_DOWN,
    STALE_FRAME,
    Frame,
    Job,
    JobQueue,
    Outcome,
    RecorderHooks,
    undo_last,
    write_frame,
)
from dli_perception.errors import DatasetError, InvalidLabelError

DRAIN_TIMEOUT_S = 3.0
"""Longest :meth:`Recorder.close` waits for queued frames to be written (launch sends SIGTERM after 5 s)."""

THROTTLE_S = 5.0
"""Repeated warnings of one kind (a refused or dropped frame while recording) are logged this often, seconds."""


class Recorder:
    """Saves the newest frame under the current label on request or continuously; see the module doc."""

    def __init__(
        self,
        store: DatasetStore,
        *,
        queue_size: int = 4,
        capture_rate_hz: float = 2.0,
        max_frame_age_s: float = 1.0,
        write_timeout_s: float = 2.0,
        image_topic: str = "image_raw",
        label_topic: str = "teach_label",
        hooks: RecorderHooks | None = None,
    ) -> None:
        self.store = store
        self.hooks = hooks or RecorderHooks()
        self.rate_hz = capture_rate_hz
        self.max_frame_age_s = max_frame_age_s
        self.write_timeout_s = write_timeout_s
        self.image_topic, self.label_topic = image_topic, label_topic
        self.lock = threading.Lock()
        self.frame: Frame | None = None
        self.frames_received = 0
        self.label: str | None = None
        self.recording = False
        self._last_queued_seq = -1
        self._closing = False
        self.saved = self.undone = self.dropped = 0
        self.refused: Counter[str] = Counter()
        self.last_error = ""
        self._warned: dict[str, float] = {}
        self._counts = self._read_counts()  # the writer's cache; nothing else reads the store
        self.jobs = JobQueue(queue_size)
        self._stop = threading.Event()
        self._drain_deadline = float("inf")
        self._worker = threading.Thread(target=self._writer_loop, name="recorder_writer", daemon=True)

    def start(self) -> None:
        """Start the writer thread and hand out the counts."""
        self._worker.start()
        self.publish_counts()

    # -- settings and inputs --------------------------------------------------------------------
    def configure(
        self,
        *,
        capture_rate_hz: float | None = None,
        max_frame_age_s: float | None = None,
        write_timeout_s: float | None = None,
    ) -> None:
        """Change the run-time settings given; a new rate applies at once while recording."""
        if max_frame_age_s is not None:
            self.max_frame_age_s = max_frame_age_s
        if write_timeout_s is not None:
            self.write_timeout_s = write_timeout_s
        if capture_rate_hz is not None:
            with self.lock:
                self.rate_hz = capture_rate_hz
                if self.recording:
                    self.hooks.pace(1.0 / self.rate_hz)

    def offer_frame(self, msg: Any, stamp_ns: int) -> None:
        """Keep ``msg`` as the newest frame; ``stamp_ns`` 0 (no header stamp) takes the wall-clock time."""
        received = time.monotonic()
        with self.lock:
            self.frames_received += 1
            self.frame = Frame(msg, received, stamp_ns if stamp_ns > 0 else time.time_ns(), self.frames_received)

    def set_label(self, text: str) -> bool:
        """Take ``text`` as the class being shown (a no-label name clears it); True when it changed."""
        label = None if is_no_label(text) else text.strip()
        with self.lock:
            if label == self.label:
                return False
            self.label = label
        if label is None:
            self.hooks.log("info", "teach label cleared: nothing is being shown")
        else:
            try:
                validate_label(label)
                self.hooks.log("info", f"teach label: {quoted(label)}")
            except InvalidLabelError as exc:
                self.hooks.log("warning", f"teach label {quoted(label, 80)} cannot be a class name: {exc}")
        return True

    # -- capture and undo -----------------------------------------------------------------------
    def check_capture(self) -> Job | Outcome:
        """The save job for the newest frame and current label, or the refusal (counted)."""
        with self.lock:
            frame, raw_label, closing = self.frame, self.label, self._closing
        refusal = None
        label = ""
        if closing:
            refusal = Outcome(False, "the recorder is shutting down; nothing was saved", SHUTTING_DOWN)
        elif raw_label is None:
            refusal = Outcome(
                False,
                f"no teach label: publish the class being shown on {self.label_topic}; nothing was saved",
                NO_LABEL,
            )
        else:
            try:
                label = validate_label(raw_label)
            except InvalidLabelError as exc:
                refusal = Outcome(False, f"invalid label: {exc}; nothing was saved", INVALID_LABEL)
        if refusal is None:
            if frame is None:
                refusal = Outcome(
                    False, f"no frame received yet on {self.image_topic}; is the camera running?", NO_FRAME
                )
            elif (age := time.monotonic() - frame.received) > self.max_frame_age_s:
                refusal = Outcome(
                    False,
                    f"stale frame: the newest frame on {self.image_topic} was received {age:.2f} s ago "
                    f"(max_frame_age_s={self.max_frame_age_s:g}); is the camera running? Nothing was saved",
                    STALE_FRAME,
                )
            elif (limit := self.store.max_per_class) is not None and self.cached_count(label) >= limit:
                refusal = Outcome(
                    False,
                    f"class {label!r} is full ({limit} images, max_per_class); undo some captures or "
                    "raise the limit; nothing was saved",
                    CLASS_FULL,
                )
        if refusal is not None:
            self._count_refusal(refusal)
            return refusal
        return Job("save", frame=frame, label=label)

    async def capture(self) -> Outcome:
        """Save the newest frame: the writer's outcome, or a refusal, within ``write_timeout_s``."""
        job = self.check_capture()
        return job if isinstance(job, Outcome) else await self._submit_and_wait(job)

    async def undo(self) -> Outcome:
        """Remove the last saved image: the writer's outcome, or a refusal, within ``write_timeout_s``."""
        with self.lock:
            closing = self._closing
        if closing:
            return Outcome(False, "the recorder is shutting down; nothing was undone", SHUTTING_DOWN)
        return await self._submit_and_wait(Job("undo"))

    async def _submit_and_wait(self, job: Job) -> Outcome:
        """Queue a call's job and wait (suspended, no thread held) for its outcome, up to write_timeout_s."""
        timeout, started = self.write_timeout_s, time.monotonic()
        with self.lock:  # the lock if_no_calls_wait takes: the host cannot stop waking for a call just queued
            outcome = self.jobs.submit_call(job, timeout)
            if outcome is None:
                self.hooks.calls_waiting()
        if outcome is None:
            outcome = await self.jobs.wait(job, timeout, started)
        if outcome.reason == BUSY:  # the writer's own refusals are counted where they happen
            self._count_refusal(outcome)
        return outcome

    def if_no_calls_wait(self, then: Callable[[], None]) -> None:
        """Call ``then`` (with the lock held) when no call waits for the writer any more."""
        with self.lock:
            if self.jobs.calls_waiting == 0:
                then()

    # -- continuous recording -------------------------------------------------------------------
    def set_recording(self, on: bool) -> Outcome:
        """Start or stop continuous recording at ``rate_hz``; refused only while shutting down."""
        with self.lock:
            if self._closing:
                return Outcome(False, "the recorder is shutting down", SHUTTING_DOWN)
            self.recording = bool(on)
            label = self.label
            if self.recording:
                self._last_queued_seq = self.frame.seq - 1 if self.frame is not None else -1
                self.hooks.pace(1.0 / self.rate_hz)
            else:
                self.hooks.pace(None)
        if on:
            note = f" under {label!r}" if label else "; no teach label yet: frames are skipped until one arrives"
            return Outcome(True, f"recording at {self.rate_hz:g} Hz{note}")
        return Outcome(True, f"recording stopped; dataset has {self.cached_count(TOTAL_KEY)} images")

    def tick(self) -> None:
        """While recording, queue the newest frame unless it was queued already; drop it when the writer lags."""
        with self.lock:
            if not self.recording or self.frame is None or self.frame.seq == self._last_queued_seq:
                return  # no new frame since the last one saved: wait for the camera
        job = self.check_capture()
        if isinstance(job, Outcome):
            self._warn_throttled("refused", f"recording: {job.message}")
            return
        with self.lock:  # the lock set_recording takes: nothing is queued once it said "stopped"
            if not self.recording:
                return
            self._last_queued_seq = job.frame.seq
            if self.jobs.put_frame(job):
                return
            self.dropped += 1
        self._warn_throttled(
            "dropped",
            "recording: the writer falls behind; frames are dropped (lower capture_rate_hz or use image_format jpg)",
        )

    # -- the writer thread ----------------------------------------------------------------------
    def _writer_loop(self) -> None:
        while True:
            try:
                job = self.jobs.take(0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            took = None
            try:
                if self.jobs.start(job):  # not a call whose caller gave up waiting
                    started = time.monotonic()
                    self._run_job(job)
                    took = time.monotonic() - started
            finally:
                self.jobs.done(took)

    def _run_job(self, job: Job) -> None:
        if self._stop.is_set() and time.monotonic() > self._drain_deadline:
            outcome = Outcome(False, "the recorder shut down before this frame was written", SHUTTING_DOWN)
        else:
            try:
                outcome = self._undo() if job.kind == "undo" else self._save(job)
            except Exception as exc:  # noqa: BLE001 - the writer must survive anything one frame does
                self.hooks.log("error", f"writer: unexpected {type(exc).__name__}: {exc}")
                outcome = Outcome(False, f"unexpected error: {type(exc).__name__}: {exc}", DATASET_ERROR)
        if not outcome.success:
            self._count_refusal(outcome)
            if job.reply is None:
                self._warn_throttled("write", f"recording: {outcome.message}")
        if job.reply is not None:
            job.reply.set_result(outcome)
            with contextlib.suppress(Exception):  # the host is gone at shutdown: nobody waits any more
                self.hooks.replied()

    def _save(self, job: Job) -> Outcome:
        result = write_frame(self.store, job, self.image_topic)
        if isinstance(result, Outcome):
            return result
        with self.lock:
            self.saved += 1
        counts = self._refresh_counts()
        return Outcome(
            True,
            f"saved {result.path} as {result.label!r} ({counts.get(result.label, 0)} in class, "
            f"{counts[TOTAL_KEY]} in total)",
            path=str(result.path),
        )

    def _undo(self) -> Outcome:
        entry = undo_last(self.store)
        if isinstance(entry, Outcome):
            return entry
        with self.lock:
            self.undone += 1
        counts = self._refresh_counts()
        return Outcome(
            True,
            f"removed {entry.file} ({entry.label!r} now has {counts.get(entry.label, 0)}, "
            f"{counts[TOTAL_KEY]} in total)",
            path=str(self.store.path_of(entry)),
        )

    # -- counts, refusals, status ---------------------------------------------------------------
    @property
    def pending_jobs(self) -> int:
        """Jobs queued or being written (0: the writer is idle and everything asked for is on disk)."""
        return self.jobs.unfinished

    def _count_refusal(self, outcome: Outcome) -> None:
        with self.lock:
            self.refused[outcome.reason] += 1
            if outcome.reason in (DATASET_ERROR, BAD_FRAME, BUSY):
                self.last_error = outcome.message

    def _warn_throttled(self, kind: str, text: str) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self._warned.get(kind, -THROTTLE_S) < THROTTLE_S:
                return
            self._warned[kind] = now
        self.hooks.log("warning", text)

    def _read_counts(self) -> dict[str, int]:
        """Per-class counts and the total from the store (start-up, the writer thread and close only)."""
        counts: dict[str, int] = dict(self.store.counts())
        counts[TOTAL_KEY] = sum(counts.values())
        return counts

    def _refresh_counts(self) -> dict[str, int]:
        """Writer thread, after a write or undo: re-read the counts into the cache and hand them out."""
        counts = self._read_counts()
        with self.lock:
            self._counts = counts
        self.publish_counts()
        return counts

    def cached_count(self, key: str) -> int:
        """The cached count of class ``key`` (or of all, ``TOTAL_KEY``); never touches the store."""
        with self.lock:
            return self._counts.get(key, 0)

    def counts(self) -> Counts:
        """The cached per-class counts."""
        with self.lock:
            return Counts({name: n for name, n in self._counts.items() if name != TOTAL_KEY})

    def publish_counts(self) -> None:
        """Hand the cached counts to the ``counts`` hook."""
        self.hooks.counts(self.counts())

    def status(self) -> tuple[str, str, dict[str, Any]]:
        """``(level, summary, values)`` for diagnostics; level is ``"ok"``, ``"warn"`` or ``"error"``."""
        store = self.store
        with self.lock:
            values = {
                "dataset": str(store.root),
                "images": self._counts[TOTAL_KEY],
                "classes": len(self._counts) - 1,
                "label": self.label or "",
                "recording": self.recording,
                "capture_rate_hz": self.rate_hz,
                "saved": self.saved,
                "undone": self.undone,
                "dropped": self.dropped,
                "queue_depth": self.pending_jobs,
                "frames_received": self.frames_received,
                "frame_age_s": -1.0 if self.frame is None else time.monotonic() - self.frame.received,
                **{f"refused_{reason}": n for reason, n in sorted(self.refused.items())},
                "last_error": self.last_error,
            }
        if store.readonly:
            return "error", f"dataset is read-only: {store.readonly_reason}", values
        if self.last_error:
            return "warn", self.last_error, values
        if self.recording:
            return "ok", f"recording {self.label!r}" if self.label else "recording: waiting for a label", values
        return "ok", "idle", values

    # -- shutdown -------------------------------------------------------------------------------
    def close(self, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Stop recording, write the queued frames (bounded), close the store, hand out the last counts.

        False when the writer did not finish in time (the store is then left for repair on next open).
        """
        with self.lock:
            self._closing = True
            self.recording = False
            self.hooks.pace(None)
        self._drain_deadline = time.monotonic() + drain_timeout_s
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=drain_timeout_s + 1.0)
        finished = not self._worker.is_alive()
        if not finished:
            self.hooks.log(
                "error",
                f"the writer did not finish within {drain_timeout_s + 1.0:g} s; the dataset is repaired "
                "when it is opened next",
            )
        else:
            try:
                self.store.close()
            except DatasetError as exc:
                self.hooks.log("error", f"closing the dataset: {exc}")
            try:
                self._counts = self._read_counts()
                self.publish_counts()
            except Exception as exc:  # noqa: BLE001 - the host may be gone; the rest must still happen
                self.hooks.log("warning", f"could not publish the final counts: {exc}")
        self.hooks.log(
            "info",
            f"dataset {self.store.root} closed: {self._counts[TOTAL_KEY]} images; this run saved {self.saved}, "
            f"undid {self.undone}, refused {sum(self.refused.values())}, dropped {self.dropped}",
        )
        return finished
