"""The counts and status side of :class:`~dli_perception.core.recording.Recorder`.

:class:`RecorderStatus` is a part of ``Recorder`` (a mixin; it uses the recorder's lock, store, hooks and
counters): the per-class counts the writer caches after every change, the refusal counters, throttled
warnings and the ``(level, summary, values)`` status that diagnostics publish.
"""

from __future__ import annotations

import time
from typing import Any

from dli_perception.core import tasks
from dli_perception.core.contracts import TOTAL_KEY, Counts
from dli_perception.core.recording_jobs import BAD_FRAME, BUSY, DATASET_ERROR, Outcome

THROTTLE_S = 5.0
"""Repeated warnings of one kind (a refused or dropped frame while recording) are logged this often, seconds."""


class RecorderStatus:
    """Counts, refusals and status of a :class:`~dli_perception.core.recording.Recorder`; see the module doc."""

    # Set by Recorder.__init__ (the one owner of these): store, hooks, task, known_labels, lock, jobs, frame,
    # frames_received, label, recording, rate_hz, saved, undone, dropped, refused, last_error, task_conflict,
    # _warned, _counts, _current_target.

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
        """Per-class counts (images per label for multi-label) and the number of images from the store
        (start-up, the writer thread and close only)."""
        counts = dict(self.store.counts())
        if self.task == tasks.MULTILABEL:  # every declared label, also those no image shows yet
            counts = {name: counts.get(name, 0) for name in sorted({*counts, *(self.known_labels or ())})}
            counts[TOTAL_KEY] = len(self.store)
            return counts
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
                "task": self.task,
                "label": self.label or "",
                "target": "" if (current := self._current_target()) is None else current.describe(),
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
        if self.task_conflict:
            return "error", self.task_conflict, values
        if self.recording:
            if self.task != tasks.CLASSIFICATION:
                target = values["target"]
                return "ok", f"recording with {target}" if target else "recording: waiting for a target", values
            return "ok", f"recording {self.label!r}" if self.label else "recording: waiting for a label", values
        return "ok", "idle", values
