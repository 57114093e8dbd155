"""recorder_node: saves labelled camera frames into a dataset (ImageFolder layout + manifest).

Teaching: publish the name of the object being shown on ``teach_label`` (std_msgs/String;
an empty string, ``none`` or ``unknown`` clears it), then call ``~/capture`` (std_srvs/Trigger)
for one frame, or ``~/set_recording`` (std_srvs/SetBool) to save ``capture_rate_hz`` frames per
second until it is called again with ``false``. ``~/undo`` (Trigger) removes the last saved image.
Per-class counts are published on ``~/counts`` (latched JSON ``{"class": n, ..., "_total": n}``)
at start and after every change; ``/diagnostics`` carries saved, refused (by reason), dropped,
queue depth, dataset root, current label and the last error.

The recording itself is :class:`dli_perception.core.recording.Recorder`, which runs without ROS;
this node wires it to the topics, services, parameters and diagnostics named here.

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

Tasks: ``task`` (start-up) chooses what a capture is saved with; ``auto`` (the default) takes the
dataset's task, or classification for an empty dataset. Regression: the current XY target
(normalised to [-1, 1], image centre 0, x right, y down) comes from ``teach_xy``
(geometry_msgs/PointStamped, ``point.x``/``point.y``) or the ``target_xy`` parameter (double array
``[x, y]``, settable at run time through the node's standard ``set_parameters`` service, which
answers a refusal with its reason); every capture, single or continuous, saves the frame with the
target current at that moment. Multi-label: the current label set comes from ``teach_labels``
(std_msgs/String, ``cup,ball`` or a JSON list; ``""`` is the empty set) or ``target_labels``
(string array); ``known_labels`` declares the labels allowed in the dataset's ``labels.txt``
(empty: the labels it declares already, else any valid names). ``~/counts``
then has ``{"xy": n}`` (regression) or the images per label (multi-label; every known label listed,
``_total`` being the sum over labels). The newest target wins, whichever way it came. A bad target
(outside [-1, 1], NaN, an unknown or invalid label, a target of another task than the dataset's)
is refused, logged and counted (``refused_invalid_target``, ``refused_wrong_task``), the current
target stays, and nothing is written; a recorder whose ``task`` contradicts its dataset refuses
every capture and says so in its diagnostics.

Bags: the recorder writes no bag itself. ``dli-perception dataset2bag DATASET --out BAG`` turns
the recorded dataset into a rosbag2 bag afterwards; that bag matches the dataset exactly, undone
captures included (a bag written while recording could not forget an undone capture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from dli_perception.core.contracts import Counts, stamp_ns_of
from dli_perception.core.dataset import DatasetStore
from dli_perception.core.recording import DRAIN_TIMEOUT_S, Recorder, RecorderHooks
from dli_perception.core.recording_jobs import MAX_WAITING_CALLS
from dli_perception.core.recording_targets import AUTO, TASK_CHOICES, parse_known_labels
from dli_perception.core.tasks import MULTILABEL
from dli_perception.errors import TargetError
from dli_perception.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from dli_perception.nodes.params import Param, declare
from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA, overridable
from dli_perception.nodes.runtime import node_main

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
        "Dataset directory ('~' is expanded; created if needed). Only one process writes a dataset at a time.",
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
    Param("dedupe", True, "Refuse an image whose file would be identical to one already saved.", read_only=True),
    Param(
        "queue_size",
        4,
        "Frames waiting for the writer at most; continuous capture drops (and counts) frames beyond it.",
        min=1,
        max=64,
        read_only=True,
    ),
    Param(
        "task",
        AUTO,
        "What a capture is saved with: a class name (classification), the XY target of teach_xy/target_xy "
        "(regression) or the label set of teach_labels/target_labels (multilabel); auto: the dataset's task, "
        "classification when it is empty.",
        choices=TASK_CHOICES,
        read_only=True,
    ),
    Param(
        "known_labels",
        "",
        "Multi-label datasets: the labels a label set may name, comma-separated (e.g. cup,ball), declared in the "
        "dataset's labels.txt (adding to the labels it declares, never dropping any); a set naming another is "
        "refused. Empty: the dataset's labels.txt, else any valid label names.",
        read_only=True,
        check=lambda text: _known_labels_problem(text),
    ),
    Param(
        "write_timeout_s",
        2.0,
        "Longest ~/capture and ~/undo wait for the writer before answering busy, seconds.",
        min=0.1,
        max=120.0,
    ),
]


TARGET_PARAMS = {
    "target_xy": (
        Parameter.Type.DOUBLE_ARRAY,
        ParameterType.PARAMETER_DOUBLE_ARRAY,
        "Regression: the XY target [x, y] of the next captures, normalised to [-1, 1] (image centre 0, x right, "
        "y down); set at run time (ros2 param set, the set_parameters service); teach_xy sets it too.",
    ),
    "target_labels": (
        Parameter.Type.STRING_ARRAY,
        ParameterType.PARAMETER_STRING_ARRAY,
        "Multi-label: the label set of the next captures; set at run time; teach_labels sets it too.",
    ),
}
"""Run-time targets, declared typed and unset (no target until one is given), so not in PARAMS."""


def _known_labels_problem(text: str) -> str | None:
    try:
        parse_known_labels(text)
    except TargetError as exc:
        return f"known_labels={text!r}: {exc}"
    return None


def dataset_dir(value: str) -> Path:
    """The dataset directory a ``dataset_dir`` parameter value names (``~`` expanded)."""
    return Path(value).expanduser()


_LEVELS = {"ok": OK, "warn": WARN, "error": ERROR}


class RecorderNode(Node):
    """Saves ``image_raw`` frames under the ``teach_label`` class on ``~/capture`` or continuously.

    The recording itself (writer thread, job queue, counts, label, undo) is a
    :class:`~dli_perception.core.recording.Recorder`; this node wires it to topics, services,
    parameters and diagnostics.
    """

    MOVES_FRAMES = True  # run_nodes keeps frame-sized buffers in the heap

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder_node", **kwargs)
        p = declare(self, PARAMS, on_change=self._on_params)
        self._store = self._open_store(p)
        try:
            self._setup(p)
        except BaseException:
            self._store.close()
            raise

    def _open_store(self, p: dict[str, Any]) -> DatasetStore:
        """The dataset, declaring ``known_labels`` in it (multi-label); a vocabulary it cannot take is
        logged and left out, so the recorder still runs and says what it records."""
        options = {
            "max_per_class": p["max_per_class"] or None,
            "jpeg_quality": p["jpeg_quality"],
            "dedupe": p["dedupe"],
            "image_format": p["image_format"],
        }
        known = parse_known_labels(p["known_labels"])
        if known is not None and p["task"] not in (AUTO, MULTILABEL):
            self.get_logger().warning(f"known_labels is for multi-label datasets; ignored with task={p['task']}")
        elif known is not None:
            try:
                return DatasetStore(dataset_dir(p["dataset_dir"]), known_labels=known, **options)
            except TargetError as exc:
                self.get_logger().error(f"known_labels {list(known)} not declared: {exc}")
        return DatasetStore(dataset_dir(p["dataset_dir"]), **options)

    def _setup(self, p: dict[str, Any]) -> None:
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
        self.xy_sub = self.create_subscription(_point_type(), "teach_xy", self._on_xy, **overridable(self, EVENTS))
        self.labels_sub = self.create_subscription(String, "teach_labels", self._on_labels, **overridable(self, EVENTS))
        self.recorder = Recorder(
            self._store,
            queue_size=p["queue_size"],
            capture_rate_hz=p["capture_rate_hz"],
            max_frame_age_s=p["max_frame_age_s"],
            write_timeout_s=p["write_timeout_s"],
            image_topic=self.image_sub.topic_name,
            label_topic=self.label_sub.topic_name,
            hooks=RecorderHooks(
                counts=self._publish_counts,
                replied=self._wake.trigger,
                calls_waiting=self._deadline_timer.reset,
                pace=self._pace,
                log=self._log,
            ),
            task=p["task"],
            xy_topic=self.xy_sub.topic_name,
            labels_topic=self.labels_sub.topic_name,
        )
        self.add_on_set_parameters_callback(self._on_target_params)
        for name, (kind, type_id, description) in TARGET_PARAMS.items():
            self.declare_parameter(name, kind, ParameterDescriptor(type=type_id, description=description))
        self.capture_srv = self.create_service(
            Trigger, "~/capture", self._on_capture, qos_profile=REQUESTS, callback_group=self._calls_group
        )
        self.undo_srv = self.create_service(
            Trigger, "~/undo", self._on_undo, qos_profile=REQUESTS, callback_group=self._calls_group
        )
        self.recording_srv = self.create_service(SetBool, "~/set_recording", self._on_set_recording)
        self.diagnostics = DiagnosticsPublisher(self, self._diagnostics, hardware_id=str(self._store.root))
        self.recorder.start()
        store = self._store
        if store.readonly:
            self.get_logger().error(
                f"dataset {store.root} is read-only ({store.readonly_reason}); captures will be refused"
            )
        counts = self.recorder.counts()
        target_from = {
            "classification": f"label from {self.label_sub.topic_name}",
            "regression": f"XY target from {self.xy_sub.topic_name} or target_xy",
            "multilabel": f"label set from {self.labels_sub.topic_name} or target_labels",
        }[self.recorder.task]
        self.get_logger().info(
            f"recording {self.recorder.task} {self.image_sub.topic_name} into {store.root} "
            f"({self.recorder.cached_count('_total')} images, {len(counts.per_class)} classes or labels, "
            f"{store.image_format}); {target_from}"
        )

    # -- what the recorder reports: counters read by tests and tools ----------------------------
    saved = property(lambda self: self.recorder.saved, doc="Images saved in this run.")
    undone = property(lambda self: self.recorder.undone, doc="Captures undone in this run.")
    dropped = property(lambda self: self.recorder.dropped, doc="Recording frames dropped (writer behind).")
    refused = property(lambda self: self.recorder.refused, doc="Refusals by reason.")
    last_error = property(lambda self: self.recorder.last_error, doc="The last write error or busy refusal.")
    pending_jobs = property(lambda self: self.recorder.pending_jobs, doc="Jobs queued or being written.")
    _frame = property(lambda self: self.recorder.frame)
    _frames_received = property(lambda self: self.recorder.frames_received)
    _queue = property(lambda self: self.recorder.jobs.queue)

    # -- parameters and subscriptions -----------------------------------------------------------
    def _on_params(self, changes: dict[str, Any]) -> None:
        if not hasattr(self, "recorder"):  # declaring: the recorder starts with the declared values
            return
        keys = ("capture_rate_hz", "max_frame_age_s", "write_timeout_s")
        self.recorder.configure(**{k: v for k, v in changes.items() if k in keys})

    def _on_image(self, msg: Any) -> None:
        self.recorder.offer_frame(msg, stamp_ns_of(msg.header))

    def _on_label(self, msg: String) -> None:
        if self.recorder.set_label(msg.data):
            self.diagnostics.publish()

    def _on_xy(self, msg: Any) -> None:
        before = self.recorder.xy
        if self.recorder.set_xy(msg.point.x, msg.point.y).success and self.recorder.xy != before:
            self.diagnostics.publish()

    def _on_labels(self, msg: String) -> None:
        before = self.recorder.label_set
        if self.recorder.set_labels(msg.data).success and self.recorder.label_set != before:
            self.diagnostics.publish()

    def _on_target_params(self, changes: list[Parameter]) -> SetParametersResult:
        """target_xy / target_labels: checked and applied at once; a refusal answers with its reason."""
        for change in changes:
            if change.name not in TARGET_PARAMS or change.value is None:
                continue
            value = list(change.value)
            if change.name == "target_xy":
                if len(value) != 2:
                    outcome = None
                    reason = f"target_xy must be [x, y] (two numbers in [-1, 1]), got {value}"
                else:
                    outcome = self.recorder.set_xy(*value)
            else:
                outcome = self.recorder.set_labels(value)
            if outcome is not None and outcome.success:
                if hasattr(self, "diagnostics"):
                    self.diagnostics.publish()
                continue
            reason = outcome.message if outcome is not None else reason
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    # -- services -------------------------------------------------------------------------------
    async def _on_capture(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        outcome = await self.recorder.capture()
        response.success, response.message = outcome.success, outcome.message
        if not outcome.success:
            self.get_logger().info(f"capture refused: {outcome.message}")
        return response

    async def _on_undo(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        outcome = await self.recorder.undo()
        response.success, response.message = outcome.success, outcome.message
        self.get_logger().info(outcome.message if outcome.success else f"undo refused: {outcome.message}")
        return response

    def _on_deadline_poll(self) -> None:
        """Wakes the executor while calls wait, so each is answered at its deadline; stops when none wait."""
        self.recorder.if_no_calls_wait(self._deadline_timer.cancel)

    def _on_set_recording(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        outcome = self.recorder.set_recording(request.data)
        if outcome.success:
            self.get_logger().info(outcome.message)
        response.success, response.message = outcome.success, outcome.message
        return response

    def _pace(self, period_s: float | None) -> None:
        """The continuous-capture timer: (re)created with ``period_s``, or removed (None)."""
        if self._record_timer is not None:
            self.destroy_timer(self._record_timer)
            self._record_timer = None
        if period_s is not None:
            self._record_timer = self.create_timer(period_s, self.recorder.tick)

    # -- output ---------------------------------------------------------------------------------
    def _log(self, level: str, text: str) -> None:
        logger = self.get_logger()  # one call site per level: rclpy ties a call site to one severity
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    def _publish_counts(self, counts: Counts) -> None:
        self.counts_pub.publish(String(data=counts.encode()))

    def _diagnostics(self):
        level, summary, values = self.recorder.status()
        return _LEVELS[level], summary, values

    def destroy_node(self) -> None:
        """Stop recording, write the queued frames (bounded), close the dataset, publish the last counts."""
        if hasattr(self, "diagnostics"):  # the constructor got that far: the recorder exists
            self.recorder.close(DRAIN_TIMEOUT_S)
        super().destroy_node()


def _nothing() -> None:
    """Callback of the writer's wake-up guard condition: waking the executor is all it is for."""


def _point_type():
    from geometry_msgs.msg import PointStamped

    return PointStamped


def _image_type():
    from sensor_msgs.msg import Image

    return Image


main = node_main(RecorderNode)

if __name__ == "__main__":
    import sys

    sys.exit(main())
