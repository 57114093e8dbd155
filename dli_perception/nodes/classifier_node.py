"""classifier_node: classifies the newest camera frame and says what it sees.

It serves a model of any task (``metadata.json`` ``task``): single-label classification (``label``,
``~/scores``), regression (an XY target on ``xy`` and ``~/xy_result``) and multi-label (``labels``,
``~/label_set``); see ``nodes/task_outputs.py`` for the last two.
Its parameters are the table in ``nodes/classifier_params.py`` (re-exported here).

The work is :class:`~dli_perception.core.live_classifier.LiveClassifier`'s; this node wires
parameters, topics and diagnostics to it. Threads: the executor only runs callbacks that store
things (a model request, parameter changes) and the diagnostics timer; the core's **worker**
thread classifies the newest stored frame (``to_rgb8`` -> the model's own preprocessing ->
backend -> decision filter) and publishes through this node; its **loader** thread loads models,
so a model load (seconds; minutes for a TensorRT engine build) never stops classification.

Frames are never queued: the subscription (sensor-data QoS, depth 1) stores the newest frame
in a single slot; a frame replaced before the worker took it is counted as dropped. The worker
takes frames from the subscription itself (``nodes/framegate.py``): idle, it sleeps in its own
wait set and takes a frame as it arrives; busy, it leaves frames in Fast DDS, which keeps only
the newest, and takes that one when done. The executor never runs the image callback (it would
cost an executor round and a thread hand-over per frame), and frames the worker could never use
cost no Python time; they are counted as dropped from the publishers' sequence numbers. Where
rclpy's wait set cannot be built, the executor delivers frames, only while the worker is idle.

Topics:

* ``image_raw`` (sensor_msgs/Image, SENSOR_DATA) in; under ``dli-perception up`` the frames of a
  camera node in the same process come by direct hand-off instead (``nodes/localframes.py``);
* ``label`` (std_msgs/String, EVENTS): smoothed class name or the unknown label, one per
  classified frame;
* ``~/scores`` (std_msgs/String, EVENTS): JSON ``{"stamp": {"sec", "nanosec"}, "frame_id",
  "label", "score", "raw_label", "raw_score", "scores": {class: probability of this frame},
  "changed", "latency_ms" (frame received -> result published), "inference_ms", "model",
  "stages_ms": {"transport" (source stamp -> received here, wall clocks), "wait" (received ->
  worker started), "convert", "preprocess", "inference", "publish" (the label)}}``;
  stamp and frame_id are the source image's; like ``~/classification``, built and published
  only while someone subscribes;
* ``~/classes`` (std_msgs/String, LATCHED): JSON list of the serving model's output names (class
  names, label names, or ``["x", "y"]``);
* ``xy`` (geometry_msgs/PointStamped, EVENTS) and ``~/xy_result`` (std_msgs/String, EVENTS):
  regression models only; ``labels`` and ``~/label_set`` (std_msgs/String, EVENTS): multi-label
  models only (``nodes/task_outputs.py``). ``label``, ``~/scores`` and ``~/classification`` carry
  classification models' results only;
* ``~/overlay`` (sensor_msgs/Image rgb8, SENSOR_DATA): the frame annotated with the result,
  drawn only while someone subscribes;
* ``~/classification`` (vision_msgs/Classification, EVENTS) when vision_msgs is installed;
* ``model_updated`` (std_msgs/String, EVENTS) in: a model directory to load; empty data
  reloads the current one. Subscribed VOLATILE so that any publisher can reach it (a
  RELIABLE+TRANSIENT_LOCAL latched publisher matches too, but its history is not replayed);
  a restarted classifier takes its model from the ``model_dir`` parameter, so a trainer
  should export to a fixed directory (replaced atomically) that the parameter names.

Hot reload: ``model_updated`` or a change of ``model_dir`` / ``backend`` / ``device`` /
``threads`` / ``precision`` / ``engine_cache_dir`` / ``calibration_dir`` loads the model in the background; the
worker swaps to it between two frames (with a fresh decision filter or task head) and publishes
the new classes; a model of another task may replace the serving one (logged: its topics change).
A parameter change is accepted at once (the load takes too long to wait for); if the load fails,
the old model keeps serving and the failure is logged and shown in diagnostics (``status``, ``last_error``), and a ``model_dir`` that failed is set back to the directory still
serving (or to its previous value when none serves), so a parameter dump never carries it into
the next start. A successful load clears ``last_error``. ``model_updated`` does
not change the ``model_dir`` parameter; diagnostics show the directory actually serving.
Clearing ``model_dir`` at run time keeps the current model serving.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from dli_perception.core.contracts import ClassList
from dli_perception.core.imaging import cv2_to_imgmsg
from dli_perception.core.live_classifier import LiveClassifier, LiveResult, LoadRequest, Outputs
from dli_perception.core.logtext import quoted
from dli_perception.core.tasks import CLASSIFICATION
from dli_perception.errors import ConfigError
from dli_perception.nodes import localframes, task_outputs
from dli_perception.nodes.classifier_params import (
    COUNTERS,
    DECISION_PARAMS,
    DEVICES,
    MODEL_PARAMS,
    PARAMS,
    PRECISIONS,
    backend_options,
    decision_config,
)
from dli_perception.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from dli_perception.nodes.framegate import DropCounter, FrameGate, FrameWaiter, SubscriptionFeed
from dli_perception.nodes.params import declare
from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA, overridable
from dli_perception.nodes.runtime import node_main

__all__ = [
    "COUNTERS",
    "DECISION_PARAMS",
    "DEVICES",
    "MODEL_PARAMS",
    "PARAMS",
    "PRECISIONS",
    "ClassifierNode",
    "backend_options",
    "decision_config",
    "main",
]


class ClassifierNode(Node):
    """Classifies the newest ``image_raw`` frame and publishes ``label``, ``~/scores`` and ``~/overlay``.

    The work is :class:`~dli_perception.core.live_classifier.LiveClassifier`'s (``self.core``);
    this node wires it to parameters, topics and diagnostics.
    """

    MOVES_FRAMES = True  # run_nodes keeps frame-sized buffers in the heap

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("classifier_node", **kwargs)
        # Set before anything can fail, so destroy_node works on a half-built node.
        self.core: LiveClassifier | None = None
        self._local_images: localframes.LocalTopic | None = None
        self._feed: SubscriptionFeed | None = None
        self._values = {p.name: p.default for p in PARAMS}
        self._declared = False
        self._restoring: str | None = None  # model_dir value being set back after a failed load
        self.overlays = 0
        # Cross-parameter check (k <= n, unknown_label not a class) for launch-time and run-time values.
        self.add_on_set_parameters_callback(self._check_decision)
        self.add_on_set_parameters_callback(self._check_task_params)
        p = declare(self, PARAMS, on_change=self._on_params)
        self._values.update(p)
        self._declared = True

        image_type = _image_type()
        self.label_pub = self.create_publisher(String, "label", **overridable(self, EVENTS))
        self.scores_pub = self.create_publisher(String, "~/scores", EVENTS)
        self.classes_pub = self.create_publisher(String, "~/classes", LATCHED)
        self.tasks = task_outputs.TaskPublishers(self)  # xy, ~/xy_result, labels, ~/label_set
        self.overlay_pub = self.create_publisher(image_type, "~/overlay", **overridable(self, SENSOR_DATA))
        vision = _vision_msgs()
        self._vision = vision
        self.classification_pub = (
            self.create_publisher(vision[0], "~/classification", EVENTS) if vision is not None else None
        )
        outputs = Outputs(
            label=self._publish_label,
            result=self._publish_result,
            classes=self._publish_classes,
            point=self.tasks.publish_point,
            labels=self.tasks.publish_labels,
        )
        self.core = LiveClassifier(
            decision_config(p),
            outputs,
            log=self._log,
            max_rate_hz=float(p["max_rate_hz"]),
            on_load_failed=self._restore_model_dir,
            task_config=task_outputs.task_config(p),
        )
        self._drops = DropCounter()
        # In the one-process runner, frames of an in-process camera arrive by direct call instead.
        self._local_images = localframes.subscribe(self, "image_raw", self.on_image)
        # The worker takes frames itself (FrameWaiter); without one, the executor delivers them only while
        # the worker is idle (FrameGate). See nodes/framegate.py.
        gate = FrameGate(self)
        self.image_sub = (
            self.create_subscription(
                image_type,
                "image_raw",
                _with_info(self._on_image_info, self.on_image),
                callback_group=gate,
                **overridable(self, SENSOR_DATA),
            )
            if self._local_images is None
            else None
        )
        waiter = None
        if self.image_sub is not None:
            try:
                waiter = FrameWaiter(self.image_sub, self.context)
            except Exception as exc:  # noqa: BLE001 - an rclpy without this wait-set API: the executor delivers
                self.get_logger().info(f"frames delivered by the executor ({type(exc).__name__}: {exc})")
        self._feed = self.core.feed = SubscriptionFeed(gate, self.image_sub, self.on_image, waiter)
        images = self.image_sub.topic_name if self.image_sub is not None else f"{self._local_images.name} (in-process)"
        self.model_sub = self.create_subscription(String, "model_updated", self.on_model_updated, EVENTS)
        self.diagnostics = DiagnosticsPublisher(self, self._diagnostics, hardware_id="classifier")

        self.core.start()
        if p["model_dir"]:
            self.request_load(p["model_dir"], "model_dir parameter")
        else:
            self.get_logger().warning(
                "no model_dir set: waiting for a model directory on "
                f"{self.model_sub.topic_name} (or set the model_dir parameter)"
            )
        self.get_logger().info(f"classifying {images} -> {self.label_pub.topic_name}, {self.scores_pub.topic_name}")

    # -- what the core holds, as node attributes (diagnostics and tests read them) ---------------
    @property
    def model(self):
        return self.core.model if self.core is not None else None

    @property
    def loading(self) -> bool:
        return self.core.loading

    @property
    def pending(self) -> int:
        """Frames stored and not yet taken by the worker: 0 or 1, never more."""
        return self.core.pending

    @property
    def last_error(self) -> str:
        return self.core.last_error

    @property
    def last_load_error(self) -> str:
        return self.core.last_load_error

    def status(self) -> str:
        """``serving``, ``loading``, ``waiting for a model`` or ``load failed`` (plus what still serves)."""
        return self.core.status()

    def _log(self, level: str, text: str, throttle_s: float = 0.0) -> None:
        # rclpy ties severity and throttling to the calling line: one call per level and kind.
        log = self.get_logger()
        if throttle_s > 0:  # per-frame messages (the core always throttles them the same)
            if level == "error":
                log.error(text, throttle_duration_sec=throttle_s)
            else:
                log.warning(text, throttle_duration_sec=throttle_s)
        elif level == "error":
            log.error(text)
        elif level == "warning":
            log.warning(text)
        elif level == "info":
            log.info(text)
        else:
            log.debug(text)

    # -- parameters -----------------------------------------------------------------------------
    def _check_decision(self, changes) -> SetParametersResult:
        mine = {c.name: c.value for c in changes if c.name in DECISION_PARAMS}
        if not mine:
            return SetParametersResult(successful=True)
        values = {**self._values, **mine}
        try:
            decision_config(values)
        except (ConfigError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        model = self.model
        if model is not None and model.task == CLASSIFICATION and values["unknown_label"] in model.classes:
            return SetParametersResult(
                successful=False,
                reason=f"unknown_label {values['unknown_label']!r} is a class of the serving model",
            )
        return SetParametersResult(successful=True)

    def _check_task_params(self, changes) -> SetParametersResult:
        mine = {c.name: c.value for c in changes if c.name in task_outputs.NAMES}
        if not mine:
            return SetParametersResult(successful=True)
        return task_outputs.check_against_model({**self._values, **mine}, self.model)

    def _on_params(self, changes: dict[str, Any]) -> None:
        before = self._values["model_dir"]
        self._values.update(changes)
        if not self._declared:
            return  # rclpy calls this during declaration too; the constructor acts on the values
        if self._restoring is not None and changes == {"model_dir": self._restoring}:
            return  # set back after a failed load: the model it names is the one serving
        if "max_rate_hz" in changes:
            self.core.max_rate_hz = float(changes["max_rate_hz"])
        if any(name in changes for name in DECISION_PARAMS):
            self.core.decision_config = decision_config(self._values)  # the worker resets its filter
        if any(name in changes for name in task_outputs.NAMES):
            self.core.task_config = task_outputs.task_config(self._values)  # the worker resets the task head
        if any(name in changes for name in MODEL_PARAMS):
            if self._values["model_dir"]:
                changed = ", ".join(sorted(n for n in changes if n in MODEL_PARAMS))
                self.request_load(
                    self._values["model_dir"],
                    f"parameter change ({changed})",
                    param_before=before if "model_dir" in changes else None,
                )
            else:
                self.get_logger().info("model_dir cleared: the current model keeps serving")

    # -- callbacks (executor thread, or the worker taking frames itself: store and return) -------
    def on_image(self, msg, info: dict | None = None) -> None:
        """Keep ``msg`` as the newest frame; a frame the worker never took is counted as dropped.

        ``info`` (the message info of the take) tells from the publisher's sequence numbers how
        many frames were replaced before they were taken; they count as received and dropped.
        """
        self.core.offer(msg, self._drops.skipped(info))

    def _on_image_info(self, msg, info) -> None:
        self.on_image(msg, info)

    def on_model_updated(self, msg: String) -> None:
        path = msg.data.strip()
        if not path:
            path = self.model.model_dir if self.model is not None else self._values["model_dir"]
        if not path:
            self.get_logger().warning("model_updated without a path and no model to reload; ignored")
            return
        self.request_load(path, f"{self.model_sub.topic_name}")

    def request_load(self, model_dir: str, reason: str, param_before: str | None = None) -> None:
        """Ask the core to load ``model_dir`` with the current backend parameters (newest request wins).

        ``param_before``: the ``model_dir`` parameter's previous value when a change of it asked for
        this load, so that a failed load can set the parameter back.
        """
        context = None if param_before is None else (model_dir, param_before)
        self.core.request_load(model_dir, backend_options(self._values), reason, context)

    def _restore_model_dir(self, req: LoadRequest) -> None:
        """After a failed load asked for by the ``model_dir`` parameter, set it back to what serves."""
        if req.context is None:
            return  # not from the parameter
        param_value, param_before = req.context
        if self._values["model_dir"] != param_value:
            return  # it has changed again since
        model = self.model
        back = model.model_dir if model is not None else param_before
        self._restoring = back
        try:
            result = self.set_parameters([Parameter("model_dir", value=back)])[0]
        finally:
            self._restoring = None
        if result.successful:
            self.get_logger().warning(f"model_dir set back to {quoted(back)}: {quoted(param_value)} did not load")
        else:
            self.get_logger().error(f"model_dir could not be set back to {quoted(back)}: {result.reason}")

    # -- outputs (worker thread) ------------------------------------------------------------------
    def _publish_label(self, label: str) -> None:
        self.label_pub.publish(String(data=label))

    def _publish_classes(self, classes: ClassList) -> None:
        self.classes_pub.publish(String(data=classes.encode()))
        model = self.model
        if model is not None and model.task != CLASSIFICATION:
            self.get_logger().info(f"serving a {model.task} model: results on {self.tasks.topics(model.task)}")

    def _publish_result(self, result: LiveResult) -> None:
        if result.scores is None:  # regression or multilabel
            self.tasks.publish_result(result)
            if self.overlay_pub.get_subscription_count() > 0:
                self._publish_overlay(result)
            return
        # Built only for topics someone subscribes to (a count is microseconds; encoding is not).
        if self.scores_pub.get_subscription_count() > 0:
            self.scores_pub.publish(String(data=result.scores.encode()))
        if self.classification_pub is not None and self.classification_pub.get_subscription_count() > 0:
            classification_cls, hypothesis_cls = self._vision
            out = classification_cls()
            out.header = result.header
            out.results = [hypothesis_cls(class_id=name, score=p) for name, p in result.scores.scores.items()]
            self.classification_pub.publish(out)
        if self.overlay_pub.get_subscription_count() > 0:
            self._publish_overlay(result)

    def _publish_overlay(self, result: LiveResult) -> None:
        from dli_perception.core.overlay import draw_overlay

        decision = result.decision
        if decision is None:  # regression: the target point; multilabel: the active labels
            annotated = task_outputs.draw(result)
        else:
            annotated = draw_overlay(
                result.rgb,
                decision.label,
                decision.score,
                result.scores.scores,
                unknown=decision.label == self.core.decision_config.unknown_label,
            )
        self.overlay_pub.publish(cv2_to_imgmsg(annotated, encoding="rgb8", header=result.header))
        self.overlays += 1

    # -- health -----------------------------------------------------------------------------------
    def _diagnostics(self):
        model = self.model
        stats = self.core.stats
        p50, p95 = stats.latency_percentiles()
        values = {
            "status": self.status(),
            "model_dir": model.model_dir if model else "",
            "task": model.task if model else "",
            "classes": ",".join(model.classes) if model else "",
            "backend": model.selection.chosen if model else "",
            "device": model.selection.device if model else "",
            "precision": model.selection.precision if model else "",
            "variant": model.selection.variant if model else "",
            "variant_reason": model.selection.variant_reason if model else "",
            "backend_selection": model.selection.summary() if model else "",
            "label": stats.last_label,
            "fps": stats.fps(),
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "inference_p50_ms": stats.inference_p50(),
            "stages_p50_ms": stats.stage_percentiles(),
            "frames_received": stats.received,
            "frames_classified": stats.classified,
            "frames_dropped": stats.dropped,
            "frames_bad": stats.bad,
            "frames_without_model": stats.without_model,
            "errors": stats.errors,
            "model_loads": stats.loads,
            "model_load_failures": stats.load_failures,
            "last_error": self.last_error,
        }
        status = values["status"]
        if model is None:
            level = ERROR if self.last_load_error else WARN
            return level, status, values
        if self.last_load_error:
            return WARN, f"{status}: {self.last_load_error}", values
        return OK, f"{status} {model.model_dir} ({model.backend.describe()})", values

    def destroy_node(self) -> None:
        """Stop and join the worker and loader (bounded), release the models, then destroy ROS handles."""
        localframes.unsubscribe(self._local_images, self.on_image)
        if self.core is not None:
            stopped = self.core.stop(timeout_s=3.0)
            if not stopped:
                self.get_logger().warning("classifier worker did not stop within 3 s")
            else:
                if self._feed is not None:
                    self._feed.close()
                self.get_logger().info(f"classifier stopped after {self.core.stats.classified} frames: worker joined")
        super().destroy_node()


def _counter(name: str) -> property:
    return property(lambda self: getattr(self.core.stats, name), doc=f"``LiveStats.{name}`` of the core.")


for _name in COUNTERS:
    setattr(ClassifierNode, _name, _counter(_name))


def _image_type():
    from sensor_msgs.msg import Image

    return Image


def _with_info(with_info, message_only):
    """``with_info`` where rclpy passes message info to two-argument callbacks (Iron and newer), else ``message_only``."""
    from rclpy.subscription import Subscription

    return with_info if hasattr(Subscription, "CallbackType") else message_only


def _vision_msgs():
    """``(Classification, ObjectHypothesis)`` when vision_msgs is installed, else None."""
    try:
        from vision_msgs.msg import Classification, ObjectHypothesis
    except ImportError:
        return None
    return Classification, ObjectHypothesis


main = node_main(ClassifierNode)

if __name__ == "__main__":
    import sys

    sys.exit(main())
