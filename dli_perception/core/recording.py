"""The recorder without ROS: labelled frames into a :class:`~dli_perception.core.dataset.DatasetStore`.

:class:`Recorder` keeps the newest frame and the current target (a class name, or by its task an XY
point or a label set: :mod:`~dli_perception.core.recording_targets`), decides whether a capture
may be saved (target, frame age, class limit), and runs one writer thread that is the only code
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
from collections.abc import Callable, Iterable
from typing import Any

from dli_perception.core import tasks
from dli_perception.core.contracts import TOTAL_KEY
from dli_perception.core.dataset import DatasetStore, is_no_label, validate_label
from dli_perception.core.logtext import quoted
from dli_perception.core.recording_jobs import (
    BUSY,
    CLASS_FULL,
    DATASET_ERROR,
    INVALID_LABEL,
    INVALID_TARGET,
    NO_FRAME,
    NO_LABEL,
    NO_TARGET,
    SHUTTING_DOWN,
    STALE_FRAME,
    WRONG_TASK,
    Frame,
    Job,
    JobQueue,
    Outcome,
    RecorderHooks,
    undo_last,
    write_frame,
)
from dli_perception.core.recording_status import RecorderStatus
from dli_perception.core.recording_targets import (
    AUTO,
    Target,
    check_labels,
    check_xy,
    no_target,
    resolve_task,
    wrong_task,
)
from dli_perception.errors import DatasetError, InvalidLabelError, TargetError

DRAIN_TIMEOUT_S = 3.0
"""Longest :meth:`Recorder.close` waits for queued frames to be written (launch sends SIGTERM after 5 s)."""


class Recorder(RecorderStatus):
    """Saves the newest frame under the current label on request or continuously; see the module doc.

    Its counts, refusal counters and diagnostics status are
    :class:`~dli_perception.core.recording_status.RecorderStatus`'s.
    """

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
        task: str = AUTO,
        xy_topic: str = "teach_xy",
        labels_topic: str = "teach_labels",
    ) -> None:
        self.store = store
        self.hooks = hooks or RecorderHooks()
        self.task, self.task_conflict = resolve_task(task, store.task)
        self.xy_topic, self.labels_topic = xy_topic, labels_topic
        self._target: Target | None = None  # regression and multi-label; classification keeps ``label``
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
        if self.task_conflict:
            self.hooks.log("error", f"captures will be refused: {self.task_conflict}")

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

    def set_xy(self, x: object, y: object) -> Outcome:
        """Take ``(x, y)`` (normalised, [-1, 1]) as the regression target of the next captures.

        Refused (counted, logged, the target unchanged) when this recorder records another task or
        the point is not a finite one inside the image.
        """
        return self._set_target(tasks.REGRESSION, f"XY target ({x}, {y})", lambda: Target(xy=check_xy(x, y)))

    def set_labels(self, labels: str | bytes | Iterable[object]) -> Outcome:
        """Take a label set (a list, or text as :func:`~dli_perception.core.tasks.parse_label_set` reads it)
        as the multi-label target of the next captures; the empty set is a valid target (none shown).

        Refused (counted, logged, the target unchanged) for another task, invalid names, or names
        outside the declared ``known_labels``.
        """
        return self._set_target(
            tasks.MULTILABEL, "label set", lambda: Target(labels=check_labels(labels, self.known_labels))
        )

    def _set_target(self, task: str, what: str, make: Callable[[], Target]) -> Outcome:
        if self.task != task:
            outcome = Outcome(False, f"{what} refused: {wrong_task(self.task, task)}", WRONG_TASK)
        else:
            try:
                target = make()
            except TargetError as exc:
                outcome = Outcome(False, f"{what} refused: {exc}", INVALID_TARGET)
            else:
                with self.lock:
                    changed, self._target = target != self._target, target
                if changed:
                    self.hooks.log("info", f"teach target: {target.describe()}")
                return Outcome(True, f"teach target {target.describe()}")
        self._count_refusal(outcome)
        self._warn_throttled(f"target_{outcome.reason}", outcome.message)
        return outcome

    known_labels = property(
        lambda self: self.store.label_vocabulary, doc="The labels the dataset declares (labels.txt), or None: any."
    )
    xy = property(lambda self: None if self._target is None else self._target.xy, doc="The current XY target.")
    label_set = property(lambda self: None if self._target is None else self._target.labels, doc="The label set.")

    def target(self) -> Target | None:
        """The current target of this recorder's task, or None when none was given yet."""
        with self.lock:
            return self._current_target()

    def _current_target(self) -> Target | None:
        if self.task == tasks.CLASSIFICATION:
            return None if self.label is None else Target(label=self.label)
        return self._target

    # -- capture and undo -----------------------------------------------------------------------
    def check_capture(self) -> Job | Outcome:
        """The save job for the newest frame and current target, or the refusal (counted)."""
        with self.lock:
            frame, raw_label, closing, target = self.frame, self.label, self._closing, self._target
        refusal = None
        label = ""
        classification = self.task == tasks.CLASSIFICATION
        if closing:
            refusal = Outcome(False, "the recorder is shutting down; nothing was saved", SHUTTING_DOWN)
        elif self.task_conflict:
            refusal = Outcome(False, f"{self.task_conflict}; nothing was saved", WRONG_TASK)
        elif not classification:
            if target is None:
                topic = self.xy_topic if self.task == tasks.REGRESSION else self.labels_topic
                refusal = Outcome(False, f"{no_target(self.task, topic)}; nothing was saved", NO_TARGET)
            label = tasks.TARGET_DIRS[self.task]
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
            elif (limit := self.store.max_per_class) is not None and self.cached_count(
                label if classification else TOTAL_KEY
            ) >= limit:
                refusal = Outcome(
                    False,
                    f"class {label!r} is full ({limit} images, max_per_class); undo some captures or "
                    "raise the limit; nothing was saved",
                    CLASS_FULL,
                )
        if refusal is not None:
            self._count_refusal(refusal)
            return refusal
        if classification:
            return Job("save", frame=frame, label=label)
        return Job("save", frame=frame, label=label, xy=target.xy, labels=target.labels)

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
            target = self._current_target()
            if self.recording:
                self._last_queued_seq = self.frame.seq - 1 if self.frame is not None else -1
                self.hooks.pace(1.0 / self.rate_hz)
            else:
                self.hooks.pace(None)
        if on:
            if target is None:
                what = "teach label" if self.task == tasks.CLASSIFICATION else "target"
                note = f"; no {what} yet: frames are skipped until one arrives"
            else:
                note = f" {'under' if target.label is not None else 'with'} {target.describe()}"
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
        if job.xy is not None or job.labels is not None:
            target = Target(xy=job.xy, labels=job.labels if job.xy is None else None)
            text = f"saved {result.path} as {result.label!r} with {target.describe()} ({counts[TOTAL_KEY]} in total)"
        else:
            text = (
                f"saved {result.path} as {result.label!r} ({counts.get(result.label, 0)} in class, "
                f"{counts[TOTAL_KEY]} in total)"
            )
        return Outcome(True, text, path=str(result.path))

    def _undo(self) -> Outcome:
        entry = undo_last(self.store)
        if isinstance(entry, Outcome):
            return entry
        with self.lock:
            self.undone += 1
        counts = self._refresh_counts()
        if entry.task != tasks.CLASSIFICATION:
            text = f"removed {entry.file} ({counts[TOTAL_KEY]} in total)"
        else:
            text = (
                f"removed {entry.file} ({entry.label!r} now has {counts.get(entry.label, 0)}, "
                f"{counts[TOTAL_KEY]} in total)"
            )
        return Outcome(True, text, path=str(self.store.path_of(entry)))

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
