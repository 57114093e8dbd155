"""recorder_node: saves labelled camera frames into a dataset (ImageFolder layout + manifest).

Teaching: publish the name of the object being shown on ``teach_label`` (std_msgs/String;
an empty string, ``none`` or ``unknown`` clears it), then call ``~/capture`` (std_srvs/Trigger)
for one frame, or ``~/set_recording`` (std_srvs/SetBool) to save ``capture_rate_hz`` frames per
second until it is called again with ``false``. ``~/undo`` (Trigger) removes the last saved image.
Per-class counts are published on ``~/counts`` (latched JSON ``{"class": n, ..., "_total": n}``)
at start and after every change; ``/diagnostics`` carries saved, refused (by reason), dropped,
queue depth, dataset root, current label and the last error.

Threads: the ``image_raw`` callback only keeps the newest frame message and its receive time.
Conversion, JPEG/PNG encoding and the atomic write run on one writer thread fed by a queue;
continuous capture never waits for it (more than ``queue_size`` frames waiting drops the frame
and counts it). The writer is the only code that touches the dataset store: it caches the
per-class counts after every write and undo, and everything the executor runs (counts,
diagnostics, refusal checks) reads that cache, so a slow write (an SD card, a large PNG) holding
the store never blocks a callback.

Answers: ``~/capture`` and ``~/undo`` queue their job and wait for it, so a successful capture
answers with the saved path. They wait as coroutines in a reentrant callback group, holding no
executor thread, so any executor serves them and every call is taken at once, each with its own
deadline: within ``write_timeout_s`` a call gets the writer's outcome, or a ``busy`` refusal that
says whether anything happened (not started: cancelled, nothing was done; being written: it may
still complete, check ``~/counts``). A call is refused as busy at once, nothing done, when
:data:`MAX_WAITING_CALLS` calls already wait, or when the jobs ahead of it would take longer
than ``write_timeout_s`` at the writer's recent pace (a call with nothing ahead is always
queued). No call goes unanswered, so a client without a timeout gets its answer too.

QoS: ``teach_label`` is subscribed with the EVENTS profile (reliable, volatile). A volatile
subscription matches every publisher, ``ros2 topic pub`` and latched ones included, whereas a
transient-local one would get nothing from a volatile publisher; the price is that a label
published before the recorder started is not seen: publish it again. The current label is
reported on ``/diagnostics`` (published at once when it changes).

Refusals come back with ``success: false`` and the reason: no label, invalid label, no frame
yet, stale frame (received more than ``max_frame_age_s`` ago: is the camera running?), class
full (``max_per_class``), duplicate (``dedupe``), disk full or read-only directory; in every case
nothing is written.

Bags: the recorder writes no bag itself. ``dli-perception dataset2bag DATASET --out BAG`` turns
the recorded dataset into a rosbag2 bag afterwards; that bag matches the dataset exactly, undone
captures included (a bag written while recording could not forget an undone capture).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from dli_perception.core.contracts import TOTAL_KEY, Counts
from dli_perception.core.dataset import DatasetStore, is_no_label, validate_label
from dli_perception.core.logtext import quoted
from dli_perception.errors import ClassFullError, DatasetError, ImageConversionError, InvalidLabelError
from dli_perception.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from dli_perception.nodes.params import Param, declare
from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA, overridable
from dli_perception.nodes.recorder_jobs import (
    BAD_FRAME,
    BUSY,
    CLASS_FULL,
    DATASET_ERROR,
    DUPLICATE,
    INVALID_LABEL,
    MAX_WAITING_CALLS,
    NO_FRAME,
    NO_LABEL,
    NOTHING_TO_UNDO,
    SHUTTING_DOWN,
    STALE_FRAME,
    Job,
    JobQueue,
    Outcome,
)
from dli_perception.nodes.runtime import node_main

DRAIN_TIMEOUT_S = 3.0
"""Longest destroy_node waits for queued frames to be written (launch sends SIGTERM after 5 s)."""

DEADLINE_POLL_S = 0.05
"""While calls wait, the executor is woken this often to answer those whose deadline passed, seconds."""

REQUESTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=MAX_WAITING_CALLS * 2,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""Capture and undo requests: the services' default profile with room for a burst of calls."""

PARAMS = [
    Param(
        "dataset_dir",
        "~/dli_datasets/default",
        "Dataset directory ('~' is expanded; created if needed). "
        "Only one process writes a dataset at a time.",
        read_only=True,
    ),
    Param(
        "capture_rate_hz",
        2.0,
        "Images saved per second while recording (~/set_recording), Hz.",
        min=0.1,
        max=60.0,
    ),
    Param(
        "max_frame_age_s",
        1.0,
        "Refuse the newest frame when it was received longer ago than this, seconds.",
        min=0.01,
        max=3600.0,
    ),
    Param(
        "max_per_class",
        0,
        "Most images kept per class; 0: unlimited.",
        min=0,
        max=100_000_000,
        read_only=True,
    ),
    Param(
        "image_format",
        "jpg",
        "File format of saved images (png: lossless, larger).",
        choices=("jpg", "png"),
        read_only=True,
    ),
    Param("jpeg_quality", 95, "JPEG quality, 1-100 (image_format jpg).", min=1, max=100, read_only=True),
    Param(
        "dedupe", True, "Refuse an image whose file would be identical to one already saved.", read_only=True
    ),
    Param(
        "queue_size",
        4,
        "Frames waiting for the writer at most; continuous capture drops (and counts) frames beyond it.",
        min=1,
        max=64,
        read_only=True,
    ),
    Param(
        "write_timeout_s",
        2.0,
        "Longest ~/capture and ~/undo wait for the writer before answering busy, seconds.",
        min=0.1,
        max=120.0,
    ),
]


@dataclass(frozen=True)
class _Frame:
    msg: Any
    received: float  # time.monotonic() at receipt
    stamp_ns: int  # header stamp, or the wall-clock receive time when the header has none
    seq: int


def dataset_dir(value: str) -> Path:
    """The dataset directory a ``dataset_dir`` parameter value names (``~`` expanded)."""
    return Path(value).expanduser()


class RecorderNode(Node):
    """Saves ``image_raw`` frames under the ``teach_label`` class on ``~/capture`` or continuously."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder_node", **kwargs)
        p = declare(self, PARAMS, on_change=self._on_params)
        self._rate_hz = p["capture_rate_hz"]
        self._max_age_s = p["max_frame_age_s"]
        self._write_timeout_s = p["write_timeout_s"]
        self._max_per_class = p["max_per_class"] or None
        self._store = DatasetStore(
            dataset_dir(p["dataset_dir"]),
            max_per_class=p["max_per_class"] or None,
            jpeg_quality=p["jpeg_quality"],
            dedupe=p["dedupe"],
            image_format=p["image_format"],
        )
        try:
            self._setup(p)
        except BaseException:
            self._store.close()
            raise

    def _setup(self, p: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._frame: _Frame | None = None
        self._frames_received = 0
        self._label: str | None = None
        self._recording = False
        self._last_queued_seq = -1
        self._closing = False
        self.saved = 0
        self.undone = 0
        self.dropped = 0
        self.refused: Counter[str] = Counter()
        self.last_error = ""
        self._counts = self._read_counts()  # the writer's cache; the executor never reads the store
        self._jobs = JobQueue(p["queue_size"])
        self._queue = self._jobs.queue
        self._stop = threading.Event()
        self._drain_deadline = float("inf")
        self._record_timer = None

        # Frames, labels and timers: quick callbacks. Capture and undo wait for the writer as
        # coroutines in a reentrant group (no thread held while they wait); the writer's guard
        # condition and a deadline timer wake the executor to resume them.
        self._calls_group = ReentrantCallbackGroup()
        self._wake = self.create_guard_condition(_nothing, callback_group=self._calls_group)
        self._deadline_timer = self.create_timer(DEADLINE_POLL_S, self._on_deadline_poll, self._calls_group)
        self._deadline_timer.cancel()  # runs only while calls wait
        self.counts_pub = self.create_publisher(String, "~/counts", LATCHED)
        self.image_sub = self.create_subscription(
            _image_type(), "image_raw", self._on_image, **overridable(self, SENSOR_DATA)
        )
        self.label_sub = self.create_subscription(String, "teach_label", self._on_label, **overridable(self, EVENTS))
        self.capture_srv = self.create_service(
            Trigger, "~/capture", self._on_capture, qos_profile=REQUESTS, callback_group=self._calls_group
        )
        self.undo_srv = self.create_service(
            Trigger, "~/undo", self._on_undo, qos_profile=REQUESTS, callback_group=self._calls_group
        )
        self.recording_srv = self.create_service(SetBool, "~/set_recording", self._on_set_recording)
        self.diagnostics = DiagnosticsPublisher(self, self._diagnostics, hardware_id=str(self._store.root))

        self._worker = threading.Thread(target=self._writer_loop, name="recorder_writer", daemon=True)
        self._worker.start()
        self._publish_counts()
        store = self._store
        if store.readonly:
            self.get_logger().error(
                f"dataset {store.root} is read-only ({store.readonly_reason}); captures will be refused"
            )
        self.get_logger().info(
            f"recording {self.image_sub.topic_name} into {store.root} ({self._counts['_total']} images in "
            f"{len(self._counts) - 1} classes, {store.image_format}); label from {self.label_sub.topic_name}"
        )

    # -- parameters -----------------------------------------------------------------------------
    def _on_params(self, changes: dict[str, Any]) -> None:
        self._max_age_s = changes.get("max_frame_age_s", self._max_age_s)
        self._write_timeout_s = changes.get("write_timeout_s", self._write_timeout_s)
        if "capture_rate_hz" in changes:
            self._rate_hz = changes["capture_rate_hz"]
            with self._lock:
                if self._recording:
                    self._start_timer()

    # -- subscriptions --------------------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        received = time.monotonic()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            self._frames_received += 1
            self._frame = _Frame(msg, received, stamp if stamp > 0 else time.time_ns(), self._frames_received)

    def _on_label(self, msg: String) -> None:
        label = None if is_no_label(msg.data) else msg.data.strip()
        with self._lock:
            if label == self._label:
                return
            self._label = label
        if label is None:
            self.get_logger().info("teach label cleared: nothing is being shown")
        else:
            try:
                validate_label(label)
                self.get_logger().info(f"teach label: {quoted(label)}")
            except InvalidLabelError as exc:
                self.get_logger().warning(f"teach label {quoted(label, 80)} cannot be a class name: {exc}")
        self.diagnostics.publish()

    # -- capture --------------------------------------------------------------------------------
    def _check_capture(self) -> tuple[Job | None, Outcome | None]:
        """The save job for the newest frame and current label, or the refusal (counted)."""
        with self._lock:
            frame, raw_label, closing = self._frame, self._label, self._closing
        refusal = None
        label = ""
        if closing:
            refusal = Outcome(False, "the recorder is shutting down; nothing was saved", SHUTTING_DOWN)
        elif raw_label is None:
            refusal = Outcome(
                False,
                f"no teach label: publish the class being shown on {self.label_sub.topic_name}; "
                "nothing was saved",
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
                    False,
                    f"no frame received yet on {self.image_sub.topic_name}; is the camera running?",
                    NO_FRAME,
                )
            elif (age := time.monotonic() - frame.received) > self._max_age_s:
                refusal = Outcome(
                    False,
                    f"stale frame: the newest frame on {self.image_sub.topic_name} was received "
                    f"{age:.2f} s ago (max_frame_age_s={self._max_age_s:g}); is the camera running? "
                    "Nothing was saved",
                    STALE_FRAME,
                )
            elif (limit := self._max_per_class) is not None and self._cached_count(label) >= limit:
                refusal = Outcome(
                    False,
                    f"class {label!r} is full ({limit} images, max_per_class); undo some captures or "
                    "raise the limit; nothing was saved",
                    CLASS_FULL,
                )
        if refusal is not None:
            self._count_refusal(refusal)
            return None, refusal
        return Job("save", frame=frame, label=label), None

    async def _on_capture(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        job, refusal = self._check_capture()
        outcome = refusal if job is None else await self._submit_and_wait(job)
        response.success, response.message = outcome.success, outcome.message
        if not outcome.success:
            self.get_logger().info(f"capture refused: {outcome.message}")
        return response

    async def _on_undo(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            closing = self._closing
        if closing:
            outcome = Outcome(False, "the recorder is shutting down; nothing was undone", SHUTTING_DOWN)
        else:
            outcome = await self._submit_and_wait(Job("undo"))
        response.success, response.message = outcome.success, outcome.message
        self.get_logger().info(outcome.message if outcome.success else f"undo refused: {outcome.message}")
        return response

    async def _submit_and_wait(self, job: Job) -> Outcome:
        """Queue a call's job and wait (suspended, no thread held) for its outcome, up to write_timeout_s."""
        timeout, started = self._write_timeout_s, time.monotonic()
        with self._lock:  # the same lock as the deadline timer's: it cannot stop for a call just queued
            outcome = self._jobs.submit_call(job, timeout)
            if outcome is None:
                self._deadline_timer.reset()
        if outcome is None:
            outcome = await self._jobs.wait(job, timeout, started)
        if outcome.reason == BUSY:  # the writer's own refusals are counted where they happen
            self._count_refusal(outcome)
        return outcome

    def _on_deadline_poll(self) -> None:
        """Wakes the executor while calls wait, so each is answered at its deadline; stops when none wait."""
        with self._lock:
            if self._jobs.calls_waiting == 0:
                self._deadline_timer.cancel()

    def _on_set_recording(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            if self._closing:
                response.success, response.message = False, "the recorder is shutting down"
                return response
            self._recording = bool(request.data)
            label = self._label
            if self._recording:
                self._last_queued_seq = self._frame.seq - 1 if self._frame is not None else -1
                self._start_timer()
            else:
                self._stop_timer()
        if request.data:
            note = (
                f" under {label!r}" if label else "; no teach label yet: frames are skipped until one arrives"
            )
            message = f"recording at {self._rate_hz:g} Hz{note}"
        else:
            message = f"recording stopped; dataset has {self._cached_count('_total')} images"
        self.get_logger().info(message)
        response.success, response.message = True, message
        return response

    def _start_timer(self) -> None:
        """(Re)create the continuous-capture timer at the current rate; call with ``_lock`` held."""
        self._stop_timer()
        self._record_timer = self.create_timer(1.0 / self._rate_hz, self._on_record_tick)

    def _stop_timer(self) -> None:
        if self._record_timer is not None:
            self.destroy_timer(self._record_timer)
            self._record_timer = None

    def _on_record_tick(self) -> None:
        with self._lock:
            if not self._recording or self._frame is None or self._frame.seq == self._last_queued_seq:
                return  # no new frame since the last one saved: wait for the camera
        job, refusal = self._check_capture()
        if job is None:
            self.get_logger().warning(f"recording: {refusal.message}", throttle_duration_sec=5.0)
            return
        with self._lock:  # the same lock as ~/set_recording: nothing is queued once it said "stopped"
            if not self._recording:
                return
            self._last_queued_seq = job.frame.seq
            if self._jobs.put_frame(job):
                return
            self.dropped += 1
        self.get_logger().warning(
            "recording: the writer falls behind; frames are dropped (lower capture_rate_hz or use "
            "image_format jpg)",
            throttle_duration_sec=5.0,
        )

    # -- writer thread --------------------------------------------------------------------------
    def _writer_loop(self) -> None:
        while True:
            try:
                job = self._jobs.take(0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            took = None
            try:
                if self._jobs.start(job):  # not a call whose caller gave up waiting
                    started = time.monotonic()
                    self._run_job(job)
                    took = time.monotonic() - started
            finally:
                self._jobs.done(took)

    @property
    def pending_jobs(self) -> int:
        """Jobs queued or being written (0: the writer is idle and everything asked for is on disk)."""
        return self._jobs.unfinished

    def _run_job(self, job: Job) -> None:
        if self._stop.is_set() and time.monotonic() > self._drain_deadline:
            outcome = Outcome(False, "the recorder shut down before this frame was written", SHUTTING_DOWN)
        else:
            try:
                outcome = self._undo() if job.kind == "undo" else self._save(job)
            except Exception as exc:  # noqa: BLE001 - the writer must survive anything one frame does
                self.get_logger().error(f"writer: unexpected {type(exc).__name__}: {exc}")
                outcome = Outcome(False, f"unexpected error: {type(exc).__name__}: {exc}", DATASET_ERROR)
        if not outcome.success:
            self._count_refusal(outcome)
            if job.reply is None:
                self.get_logger().warning(f"recording: {outcome.message}", throttle_duration_sec=5.0)
        if job.reply is not None:
            job.reply.set_result(outcome)
            self._wake_calls()

    def _wake_calls(self) -> None:
        """Wake the executor so the call waiting for a finished job answers now (writer thread)."""
        with contextlib.suppress(Exception):  # destroyed at shutdown: nobody waits any more
            self._wake.trigger()

    def _save(self, job: Job) -> Outcome:
        from dli_perception.core.imaging import to_rgb8

        store, frame = self._store, job.frame
        try:
            encoded = store.encode(to_rgb8(frame.msg))
        except ImageConversionError as exc:
            return Outcome(False, f"the frame cannot be converted: {exc}; nothing was saved", BAD_FRAME)
        try:
            result = store.add_encoded(encoded, job.label, frame.stamp_ns, self.image_sub.topic_name)
        except ClassFullError as exc:
            return Outcome(False, f"{exc}; nothing was saved", CLASS_FULL)
        except InvalidLabelError as exc:
            return Outcome(False, f"invalid label: {exc}", INVALID_LABEL)
        except DatasetError as exc:
            self.last_error = str(exc)
            return Outcome(False, str(exc), DATASET_ERROR)
        if result.duplicate:
            return Outcome(
                False,
                f"duplicate: the frame is identical to {result.file}, already saved; nothing was saved",
                DUPLICATE,
                str(result.path),
            )
        with self._lock:
            self.saved += 1
        counts = self._refresh_counts()
        return Outcome(
            True,
            f"saved {result.path} as {result.label!r} ({counts.get(result.label, 0)} in class, "
            f"{counts['_total']} in total)",
            path=str(result.path),
        )

    def _undo(self) -> Outcome:
        try:
            removed = self._store.undo(1)
        except DatasetError as exc:
            self.last_error = str(exc)
            return Outcome(False, str(exc), DATASET_ERROR)
        if not removed:
            return Outcome(False, "nothing to undo: the dataset is empty", NOTHING_TO_UNDO)
        with self._lock:
            self.undone += 1
        counts = self._refresh_counts()
        entry = removed[0]
        return Outcome(
            True,
            f"removed {entry.file} ({entry.label!r} now has {counts.get(entry.label, 0)}, "
            f"{counts['_total']} in total)",
            path=str(self._store.path_of(entry)),
        )

    # -- output ---------------------------------------------------------------------------------
    def _count_refusal(self, outcome: Outcome) -> None:
        with self._lock:
            self.refused[outcome.reason] += 1
            if outcome.reason in (DATASET_ERROR, BAD_FRAME, BUSY):
                self.last_error = outcome.message

    def _read_counts(self) -> dict[str, int]:
        """Per-class counts and ``_total`` from the store (start-up and the writer thread only)."""
        counts: dict[str, int] = dict(self._store.counts())
        counts["_total"] = sum(counts.values())
        return counts

    def _refresh_counts(self) -> dict[str, int]:
        """Writer thread, after a write or undo: re-read the counts into the cache and publish them."""
        counts = self._read_counts()
        with self._lock:
            self._counts = counts
        self._publish_counts()
        return counts

    def _cached_count(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def _publish_counts(self) -> None:
        with self._lock:
            counts = dict(self._counts)
        per_class = {name: n for name, n in counts.items() if name != TOTAL_KEY}
        self.counts_pub.publish(String(data=Counts(per_class).encode()))

    def _diagnostics(self):
        store = self._store
        with self._lock:
            values = {
                "dataset": str(store.root),
                "images": self._counts["_total"],
                "classes": len(self._counts) - 1,
                "label": self._label or "",
                "recording": self._recording,
                "capture_rate_hz": self._rate_hz,
                "saved": self.saved,
                "undone": self.undone,
                "dropped": self.dropped,
                "queue_depth": self.pending_jobs,
                "frames_received": self._frames_received,
                "frame_age_s": -1.0 if self._frame is None else time.monotonic() - self._frame.received,
                **{f"refused_{reason}": n for reason, n in sorted(self.refused.items())},
                "last_error": self.last_error,
            }
        if store.readonly:
            return ERROR, f"dataset is read-only: {store.readonly_reason}", values
        if self.last_error:
            return WARN, self.last_error, values
        if self._recording:
            return (
                OK,
                f"recording {self._label!r}" if self._label else "recording: waiting for a label",
                values,
            )
        return OK, "idle", values

    def destroy_node(self) -> None:
        """Stop recording, write the queued frames (bounded), close the dataset, publish the last counts."""
        if not hasattr(self, "_worker"):  # the constructor failed part-way
            super().destroy_node()
            return
        with self._lock:
            self._closing = True
            self._recording = False
            self._stop_timer()
        self._drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
        self._stop.set()
        self._worker.join(timeout=DRAIN_TIMEOUT_S + 1.0)
        if self._worker.is_alive():
            self.get_logger().error(
                f"the writer did not finish within {DRAIN_TIMEOUT_S + 1.0:g} s; the dataset is repaired "
                "when it is opened next"
            )
        else:
            try:
                self._store.close()
            except DatasetError as exc:
                self.get_logger().error(f"closing the dataset: {exc}")
            try:
                self._counts = self._read_counts()
                self._publish_counts()
            except Exception as exc:  # noqa: BLE001 - the context may be gone; the rest must still happen
                self.get_logger().warning(f"could not publish the final counts: {exc}")
        self.get_logger().info(
            f"dataset {self._store.root} closed: {self._counts['_total']} images; this run saved {self.saved}, "
            f"undid {self.undone}, refused {sum(self.refused.values())}, dropped {self.dropped}"
        )
        super().destroy_node()


def _nothing() -> None:
    """Callback of the writer's wake-up guard condition: waking the executor is all it is for."""


def _image_type():
    from sensor_msgs.msg import Image

    return Image


main = node_main(RecorderNode, multithreaded=True)

if __name__ == "__main__":
    import sys

    sys.exit(main())
