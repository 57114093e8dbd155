"""classifier_node: classifies the newest camera frame and says what it sees.

Threads: the executor only runs callbacks that store things (the newest frame, a model
request, parameter changes) and the diagnostics timer; a **worker** thread classifies the
newest stored frame (``to_rgb8`` -> the model's own preprocessing -> backend -> decision
filter) and publishes; a **loader** thread loads models, so a model load (seconds; minutes for
a TensorRT engine build) never stops classification.

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
  stamp and frame_id are the source image's;
* ``~/classes`` (std_msgs/String, LATCHED): JSON list of the serving model's class names;
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
worker swaps to it between two frames (with a fresh decision filter) and publishes the new
classes. A parameter change is accepted at once (the load takes too long to wait for); if the
load fails, the old model keeps serving and the failure is logged and shown in diagnostics
(``status``, ``last_error``), and a ``model_dir`` that failed is set back to the directory still
serving (or to its previous value when none serves), so a parameter dump never carries it into
the next start. A successful load clears ``last_error``. ``model_updated`` does
not change the ``model_dir`` parameter; diagnostics show the directory actually serving.
Clearing ``model_dir`` at run time keeps the current model serving.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from dli_perception.core.backends.select import CHOICES as BACKEND_CHOICES
from dli_perception.core.contracts import ClassList, Scores, stamp_ns_of
from dli_perception.core.decision import SMOOTHING, DecisionConfig, DecisionFilter
from dli_perception.core.imaging import cv2_to_imgmsg, to_rgb8
from dli_perception.core.logtext import printable, quoted
from dli_perception.core.preprocess import PreprocessConfig, preprocess
from dli_perception.errors import ConfigError, ImageConversionError
from dli_perception.nodes import localframes
from dli_perception.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from dli_perception.nodes.framegate import DropCounter, FrameGate, FrameWaiter, take_newest
from dli_perception.nodes.params import Param, declare
from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA, overridable
from dli_perception.nodes.runtime import node_main

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
LATENCY_WINDOW = 200
"""Latest results the latency percentiles are computed over."""
FPS_WINDOW_S = 2.0
"""Seconds of recent results the fps figure is computed over."""
STAGES = ("transport", "wait", "convert", "preprocess", "inference", "publish")
"""Stages of one frame's way through the node, timed for ~/scores and diagnostics."""


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_empty(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


PARAMS = [
    Param(
        "model_dir",
        "",
        "Model directory (model.onnx, labels.txt, metadata.json); empty: wait for one on "
        "model_updated. Changing it loads the model in the background.",
    ),
    Param(
        "backend",
        "auto",
        "Inference backend; auto tries tensorrt, then onnxruntime, then torch.",
        choices=BACKEND_CHOICES,
    ),
    Param("device", "auto", "Inference device (auto: a GPU when the backend can use one).", choices=DEVICES),
    Param(
        "threads",
        0,
        "CPU threads for inference (onnxruntime intra-op; torch: its thread pool); 0 = the library's default.",
        min=0,
        max=256,
    ),
    Param(
        "precision",
        "auto",
        "Precision variant: auto serves the fastest one the model directory holds that passed its export "
        "check (INT8 Q/DQ on the CPU and TensorRT, else FP16 on TensorRT, else fp32); the one served and why "
        "are logged and on /diagnostics.",
        choices=PRECISIONS,
    ),
    Param(
        "engine_cache_dir",
        "",
        "Directory of cached TensorRT engines; empty: $DLI_PERCEPTION_ENGINE_CACHE or ~/.cache/dli_perception/engines.",
    ),
    Param(
        "calibration_dir",
        "",
        "Dataset folder (one sub-folder per class) for TensorRT's implicit INT8 calibrator (precision int8, "
        "TensorRT < 11, model without an INT8 Q/DQ variant only).",
    ),
    Param("smoothing", "ema", "Temporal smoothing of the probabilities.", choices=SMOOTHING),
    Param(
        "ema_alpha",
        0.5,
        "Weight of the newest frame in the moving average (1 = no smoothing).",
        min=0.0,
        max=1.0,
        check=_positive,
    ),
    Param(
        "threshold",
        0.5,
        "Smoothed probability (0-1) a class needs; below it the label is unknown_label.",
        min=0.0,
        max=1.0,
    ),
    Param(
        "hysteresis",
        0.1,
        "Probability margin (0-1) a new class must win by, and the current one may fall "
        "below threshold by, before the label changes.",
        min=0.0,
        max=1.0,
    ),
    Param("k", 3, "k_of_n smoothing: votes of the last n frames a label needs.", min=1, max=1000),
    Param("n", 5, "k_of_n smoothing: number of frames voting.", min=1, max=1000),
    Param("unknown_label", "unknown", "Label published when no class is confident enough.", check=_non_empty),
    Param(
        "max_rate_hz",
        0.0,
        "Most frames classified per second; 0 = as fast as the backend goes.",
        min=0.0,
        max=1000.0,
    ),
]

MODEL_PARAMS = (
    "model_dir",
    "backend",
    "device",
    "threads",
    "precision",
    "engine_cache_dir",
    "calibration_dir",
)
DECISION_PARAMS = ("smoothing", "ema_alpha", "threshold", "hysteresis", "k", "n", "unknown_label")


def decision_config(values: dict[str, Any]) -> DecisionConfig:
    """The :class:`DecisionConfig` of the decision parameters in ``values``; ConfigError if inconsistent."""
    return DecisionConfig(**{name: values[name] for name in DECISION_PARAMS})


def backend_options(
    backend: str,
    *,
    device: str = "auto",
    threads: int = 0,
    precision: str = "auto",
    engine_cache_dir: str = "",
    calibration_dir: str = "",
) -> dict[str, Any]:
    """Options for :func:`create_backend` from the node's parameters, each kept only if a backend knows it.

    ``engine_cache_dir`` serves as TensorRT's engine cache and the TensorRT execution provider's
    cache; empty values are left to the backends.
    """
    from dli_perception.core.backends.select import BACKENDS, backend_class

    wanted: dict[str, Any] = {"device": device, "precision": precision}
    if threads > 0:
        wanted["intra_op_threads"] = int(threads)
    if engine_cache_dir:
        wanted.update(cache_dir=engine_cache_dir, trt_cache_dir=engine_cache_dir)
    if calibration_dir:
        wanted["calibration_dir"] = calibration_dir
    names = BACKENDS if backend == "auto" else (backend,)
    known = set().union(*(backend_class(name).OPTIONS for name in names))
    return {k: v for k, v in wanted.items() if k in known}


@dataclass
class LoadRequest:
    """A model to load, with the backend settings current when it was asked for."""

    model_dir: str
    backend: str
    options: dict[str, Any]
    threads: int
    reason: str
    param_value: str | None = None  # the model_dir parameter value that asked for it (None: not the parameter)
    param_before: str = ""  # that parameter's value before the change


@dataclass
class ServingModel:
    """A loaded model and everything the worker needs per frame."""

    backend: Any
    selection: Any
    model_dir: str
    classes: list[str]
    preprocess: PreprocessConfig
    decision: DecisionFilter
    batch: np.ndarray = field(repr=False)
    load_s: float = 0.0
    refused_config: DecisionConfig | None = None


@dataclass
class PendingFrame:
    """The newest frame, with its receive time (time.monotonic) and wall-clock receive time (ns)."""

    msg: Any
    received: float
    received_ns: int = 0


class ClassifierNode(Node):
    """Classifies the newest ``image_raw`` frame and publishes ``label``, ``~/scores`` and ``~/overlay``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("classifier_node", **kwargs)
        # Set before anything can fail, so destroy_node works on a half-built node.
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._loader: threading.Thread | None = None
        self._pending: PendingFrame | None = None
        self._local_images: localframes.LocalTopic | None = None
        self._waiter: FrameWaiter | None = None
        self._staged: ServingModel | None = None
        self._load_request: LoadRequest | None = None
        self.model: ServingModel | None = None
        self.loading = False
        self._values = {p.name: p.default for p in PARAMS}
        self._declared = False
        self._restoring: str | None = None  # model_dir value being set back after a failed load
        # Cross-parameter check (k <= n, unknown_label not a class) for launch-time and run-time values.
        self.add_on_set_parameters_callback(self._check_decision)
        p = declare(self, PARAMS, on_change=self._on_params)
        self._values.update(p)
        self._declared = True
        self._decision_config = decision_config(p)
        self._max_rate = float(p["max_rate_hz"])

        # Counters (each written by one thread; read by diagnostics and tests).
        self.received = 0
        self.dropped = 0
        self.without_model = 0
        self.classified = 0
        self.bad = 0
        self.errors = 0
        self.loads = 0
        self.load_failures = 0
        self.max_pending = 0
        self.overlays = 0
        self.last_error = ""
        self.last_load_error = ""
        self.last_label = ""
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._inference: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._stages: collections.deque[tuple[float, ...]] = collections.deque(maxlen=LATENCY_WINDOW)
        self._drops = DropCounter()
        self._done_times: collections.deque[float] = collections.deque(maxlen=1000)

        image_type = _image_type()
        self.label_pub = self.create_publisher(String, "label", **overridable(self, EVENTS))
        self.scores_pub = self.create_publisher(String, "~/scores", EVENTS)
        self.classes_pub = self.create_publisher(String, "~/classes", LATCHED)
        self.overlay_pub = self.create_publisher(image_type, "~/overlay", **overridable(self, SENSOR_DATA))
        vision = _vision_msgs()
        self._vision = vision
        self.classification_pub = (
            self.create_publisher(vision[0], "~/classification", EVENTS) if vision is not None else None
        )
        # In the one-process runner, frames of an in-process camera arrive by direct call instead.
        self._local_images = localframes.subscribe(self, "image_raw", self.on_image)
        # The worker takes frames itself (FrameWaiter); without one, the executor delivers them only while
        # the worker is idle (FrameGate). See nodes/framegate.py.
        self._gate = FrameGate(self)
        self.image_sub = (
            self.create_subscription(
                image_type,
                "image_raw",
                _with_info(self._on_image_info, self.on_image),
                callback_group=self._gate,
                **overridable(self, SENSOR_DATA),
            )
            if self._local_images is None
            else None
        )
        if self.image_sub is not None:
            try:
                self._waiter = FrameWaiter(self.image_sub, self.context)
                self._gate.close()  # the worker takes every frame itself
            except Exception as exc:  # noqa: BLE001 - an rclpy without this wait-set API: the executor delivers
                self.get_logger().info(f"frames delivered by the executor ({type(exc).__name__}: {exc})")
        images = self.image_sub.topic_name if self.image_sub is not None else f"{self._local_images.name} (in-process)"
        self.model_sub = self.create_subscription(String, "model_updated", self.on_model_updated, EVENTS)
        self.diagnostics = DiagnosticsPublisher(self, self._diagnostics, hardware_id="classifier")

        self._worker = threading.Thread(target=self._work_loop, name="classifier_worker", daemon=True)
        self._loader = threading.Thread(target=self._load_loop, name="classifier_loader", daemon=True)
        self._worker.start()
        self._loader.start()
        if p["model_dir"]:
            self.request_load(p["model_dir"], "model_dir parameter")
        else:
            self.get_logger().warning(
                "no model_dir set: waiting for a model directory on "
                f"{self.model_sub.topic_name} (or set the model_dir parameter)"
            )
        self.get_logger().info(f"classifying {images} -> {self.label_pub.topic_name}, {self.scores_pub.topic_name}")

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
        model = getattr(self, "model", None)
        if model is not None and values["unknown_label"] in model.classes:
            return SetParametersResult(
                successful=False,
                reason=f"unknown_label {values['unknown_label']!r} is a class of the serving model",
            )
        return SetParametersResult(successful=True)

    def _on_params(self, changes: dict[str, Any]) -> None:
        before = self._values["model_dir"]
        self._values.update(changes)
        if not self._declared:
            return  # rclpy calls this during declaration too; the constructor acts on the values
        if self._restoring is not None and changes == {"model_dir": self._restoring}:
            return  # set back after a failed load: the model it names is the one serving
        if "max_rate_hz" in changes:
            self._max_rate = float(changes["max_rate_hz"])
        if any(name in changes for name in DECISION_PARAMS):
            self._decision_config = decision_config(self._values)  # the worker resets its filter
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

    # -- callbacks (executor thread: store and return) ------------------------------------------
    def on_image(self, msg, info: dict | None = None) -> None:
        """Keep ``msg`` as the newest frame; a frame the worker never took is counted as dropped.

        ``info`` (the message info of the take) tells from the publisher's sequence numbers how
        many frames were replaced before they were taken; they count as received and dropped.
        """
        now = time.monotonic()
        now_ns = time.time_ns()
        skipped = self._drops.skipped(info)
        with self._cond:
            self.received += 1 + skipped
            self.dropped += skipped
            if self.model is None and self._staged is None:
                self.without_model += 1
                return
            if self._pending is not None:
                self.dropped += 1
            self._pending = PendingFrame(msg, now, now_ns)
            self._gate.close()
            self.max_pending = max(self.max_pending, 1)
            self._cond.notify_all()

    def _on_image_info(self, msg, info) -> None:
        self.on_image(msg, info)

    def _take_newest(self) -> None:
        """Worker thread, after a frame: take the frame Fast DDS kept meanwhile, if any, as the newest."""
        if self.image_sub is None:
            return
        got = take_newest(self.image_sub)
        if got is not None:
            self.on_image(got[0], got[1])

    def on_model_updated(self, msg: String) -> None:
        path = msg.data.strip()
        if not path:
            path = self.model.model_dir if self.model is not None else self._values["model_dir"]
        if not path:
            self.get_logger().warning("model_updated without a path and no model to reload; ignored")
            return
        self.request_load(path, f"{self.model_sub.topic_name}")

    def request_load(self, model_dir: str, reason: str, param_before: str | None = None) -> None:
        """Ask the loader thread to load ``model_dir`` with the current backend settings (newest request wins).

        ``param_before``: the ``model_dir`` parameter's previous value when a change of it asked for
        this load, so that a failed load can set the parameter back.
        """
        v = self._values
        request = LoadRequest(
            model_dir=os.path.expanduser(model_dir),
            backend=v["backend"],
            options=backend_options(
                v["backend"],
                device=v["device"],
                threads=int(v["threads"]),
                precision=v["precision"],
                engine_cache_dir=v["engine_cache_dir"],
                calibration_dir=v["calibration_dir"],
            ),
            threads=int(v["threads"]),
            reason=reason,
            param_value=None if param_before is None else model_dir,
            param_before=param_before or "",
        )
        with self._cond:
            self._load_request = request
            self._cond.notify_all()

    # -- loader thread ----------------------------------------------------------------------------
    def _load_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop.is_set() and self._load_request is None:
                    self._cond.wait()
                if self._stop.is_set():
                    return
                request, self._load_request = self._load_request, None
                self.loading = True
            try:
                self._load(request)
            finally:
                self.loading = False

    def _load(self, req: LoadRequest) -> None:
        from dli_perception.core.backends.select import create_backend

        self.get_logger().info(f"loading model {quoted(req.model_dir)} ({req.reason}), backend {req.backend}")
        t0 = time.monotonic()
        try:
            backend, selection = create_backend(req.model_dir, req.backend, **req.options)
            try:
                if selection.chosen == "torch" and req.threads > 0:
                    import torch

                    torch.set_num_threads(req.threads)
                backend.warmup(1)
                meta = backend.metadata
                decision = DecisionFilter(meta.classes, self._decision_config)
            except BaseException:
                backend.close()
                raise
        except Exception as exc:  # ModelError, BackendUnavailableError, ConfigError, or a library's own
            self.load_failures += 1
            self.last_load_error = f"loading {quoted(req.model_dir)} failed: {type(exc).__name__}: {printable(exc)}"
            self.last_error = self.last_load_error
            serving = (
                f"{quoted(self.model.model_dir)} keeps serving" if self.model is not None else "no model is serving"
            )
            self.get_logger().error(f"{self.last_load_error}; {serving}")
            self._restore_model_dir(req)
            return
        model = ServingModel(
            backend=backend,
            selection=selection,
            model_dir=req.model_dir,
            classes=list(meta.classes),
            preprocess=meta.preprocess,
            decision=decision,
            batch=np.empty((1, *meta.preprocess.input_shape), dtype=np.float32),
            load_s=time.monotonic() - t0,
        )
        with self._cond:
            stopped = self._stop.is_set()
            if not stopped:
                replaced, self._staged = self._staged, model  # a staged model the worker never took
                self.loads += 1
                self.last_load_error = ""
                self.last_error = ""
                self._wake_worker()
        if stopped:
            model.backend.close()
            return
        if replaced is not None:
            replaced.backend.close()
        self.get_logger().info(
            f"model {quoted(req.model_dir)} loaded in {model.load_s:.2f} s: {len(model.classes)} classes "
            f"{model.classes}, {selection.summary()}"
        )

    def _restore_model_dir(self, req: LoadRequest) -> None:
        """After a failed load asked for by the ``model_dir`` parameter, set it back to what serves."""
        if req.param_value is None or self._values["model_dir"] != req.param_value:
            return  # not from the parameter, or it has changed again since
        model = self.model
        back = model.model_dir if model is not None else req.param_before
        self._restoring = back
        try:
            result = self.set_parameters([Parameter("model_dir", value=back)])[0]
        finally:
            self._restoring = None
        if result.successful:
            self.get_logger().warning(f"model_dir set back to {quoted(back)}: {quoted(req.param_value)} did not load")
        else:
            self.get_logger().error(f"model_dir could not be set back to {quoted(back)}: {result.reason}")

    # -- worker thread ----------------------------------------------------------------------------
    def _work_loop(self) -> None:
        next_due = 0.0
        while True:
            with self._cond:
                while (
                    self._waiter is None and not self._stop.is_set() and self._pending is None and self._staged is None
                ):
                    self._gate.open()  # idle: let the executor deliver the next frame
                    self._cond.wait()
                if self._stop.is_set():
                    return
                idle = self._pending is None and self._staged is None
            if idle:  # only with a waiter: sleep until a frame arrives, then take it here
                self._wait_for_frame()
                continue
            with self._cond:
                staged, self._staged = self._staged, None
                if staged is not None:
                    previous, self.model = self.model, staged
                frame, self._pending = self._pending, None
            if staged is not None:
                self._swapped(staged, previous)
            if frame is None or self.model is None:
                continue
            try:
                self._classify(self.model, frame)
            except Exception as exc:  # never let one frame end the worker
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {printable(exc)}"
                self.get_logger().error(f"classification failed: {self.last_error}", throttle_duration_sec=5.0)
            if self._max_rate > 0:
                next_due = max(next_due + 1.0 / self._max_rate, time.monotonic())
                if self._stop.wait(max(0.0, next_due - time.monotonic())):
                    return
            self._take_newest()

    def _wait_for_frame(self) -> None:
        try:
            self._waiter.wait(0.5)
        except Exception as exc:  # noqa: BLE001 - shutting down (handles destroyed) or an rcl error: retry soon
            if self._stop.wait(0.05):
                return
            self.get_logger().debug(f"waiting for a frame: {type(exc).__name__}: {exc}")
            return
        self._take_newest()

    def _wake_worker(self) -> None:
        """Wake the worker from its condition wait and from its frame wait (call with ``_cond`` held)."""
        self._cond.notify_all()
        if self._waiter is not None:
            self._waiter.wake()

    def _swapped(self, model: ServingModel, previous: ServingModel | None) -> None:
        self.classes_pub.publish(String(data=ClassList(tuple(model.classes)).encode()))
        if previous is not None:
            previous.backend.close()
            self.get_logger().info(f"now serving {quoted(model.model_dir)} (was {quoted(previous.model_dir)})")

    def _classify(self, model: ServingModel, frame: PendingFrame) -> None:
        msg = frame.msg
        t_start = time.perf_counter()
        wait_ms = (time.monotonic() - frame.received) * 1000.0
        self._apply_decision_config(model)
        try:
            rgb = to_rgb8(msg)
            t_converted = time.perf_counter()
            preprocess(rgb, model.preprocess, out=model.batch[0])
        except (ImageConversionError, ConfigError) as exc:
            self.bad += 1
            self.last_error = (
                f"bad frame ({quoted(getattr(msg, 'encoding', '?'))}, {getattr(msg, 'width', '?')}x"
                f"{getattr(msg, 'height', '?')}): {printable(exc)}"
            )
            self.get_logger().warning(f"skipping {self.last_error}", throttle_duration_sec=5.0)
            return
        t1 = time.perf_counter()
        probs = model.backend.infer(model.batch)[0]
        t2 = time.perf_counter()
        inference_ms = (t2 - t1) * 1000.0
        decision = model.decision.update(probs)
        self.label_pub.publish(String(data=decision.label))
        latency_ms = (time.monotonic() - frame.received) * 1000.0
        header = msg.header
        stages = (
            (frame.received_ns - (header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)) / 1e6,
            wait_ms,
            (t_converted - t_start) * 1000.0,
            (t1 - t_converted) * 1000.0,
            inference_ms,
            (time.perf_counter() - t2) * 1000.0,
        )
        scores = {name: float(p) for name, p in zip(model.classes, probs, strict=True)}
        result = Scores(
            stamp_ns=stamp_ns_of(header),
            frame_id=header.frame_id,
            label=decision.label,
            score=round(decision.score, 6),
            raw_label=decision.raw_label,
            raw_score=round(decision.raw_score, 6),
            scores=scores,
            changed=decision.changed,
            latency_ms=round(latency_ms, 3),
            inference_ms=round(inference_ms, 3),
            model=model.model_dir,
            stages_ms={name: round(v, 3) for name, v in zip(STAGES, stages, strict=True)},
        )
        self.scores_pub.publish(String(data=result.encode()))
        if self.classification_pub is not None:
            self._publish_classification(header, scores)
        if self.overlay_pub.get_subscription_count() > 0:
            self._publish_overlay(rgb, header, decision, scores)
        self.classified += 1
        self.last_label = decision.label
        self._latencies.append(latency_ms)
        self._inference.append(inference_ms)
        self._stages.append(stages)
        self._done_times.append(time.monotonic())

    def _apply_decision_config(self, model: ServingModel) -> None:
        """Give ``model`` a fresh decision filter after the decision parameters changed."""
        config = self._decision_config
        if model.decision.config is config or model.refused_config is config:
            return
        try:
            model.decision = DecisionFilter(model.classes, config)
        except ConfigError as exc:
            model.refused_config = config
            self.last_error = f"decision parameters not applied to {quoted(model.model_dir)}: {exc}"
            self.get_logger().error(self.last_error)

    def _publish_classification(self, header, scores: dict[str, float]) -> None:
        classification_cls, hypothesis_cls = self._vision
        out = classification_cls()
        out.header = header
        out.results = [hypothesis_cls(class_id=name, score=p) for name, p in scores.items()]
        self.classification_pub.publish(out)

    def _publish_overlay(self, rgb: np.ndarray, header, decision, scores: dict[str, float]) -> None:
        from dli_perception.core.overlay import draw_overlay

        annotated = draw_overlay(
            rgb,
            decision.label,
            decision.score,
            scores,
            unknown=decision.label == self._decision_config.unknown_label,
        )
        self.overlay_pub.publish(cv2_to_imgmsg(annotated, encoding="rgb8", header=header))
        self.overlays += 1

    # -- health -----------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Frames stored and not yet taken by the worker: 0 or 1, never more."""
        return 0 if self._pending is None else 1

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

    def stage_percentiles(self) -> str:
        """``stage=p50`` (milliseconds) of each of :data:`STAGES` over recent frames, one line."""
        rows = list(self._stages)
        if not rows:
            return ""
        p50 = np.median(np.asarray(rows), axis=0)
        return " ".join(f"{name}={v:.2f}" for name, v in zip(STAGES, p50, strict=True))

    def status(self) -> str:
        """``serving``, ``loading``, ``waiting for a model`` or ``load failed`` (plus what still serves)."""
        if self.model is None:
            if self.loading or self._load_request is not None or self._staged is not None:
                return "loading"
            return "load failed" if self.last_load_error else "waiting for a model"
        if self.loading or self._load_request is not None or self._staged is not None:
            return "loading a new model; previous model serving"
        return "load failed; previous model serving" if self.last_load_error else "serving"

    def _diagnostics(self):
        model = self.model
        p50, p95 = self.latency_percentiles()
        inference = list(self._inference)
        values = {
            "status": self.status(),
            "model_dir": model.model_dir if model else "",
            "classes": ",".join(model.classes) if model else "",
            "backend": model.selection.chosen if model else "",
            "device": model.selection.device if model else "",
            "precision": model.selection.precision if model else "",
            "variant": model.selection.variant if model else "",
            "variant_reason": model.selection.variant_reason if model else "",
            "backend_selection": model.selection.summary() if model else "",
            "label": self.last_label,
            "fps": self.fps(),
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
            "inference_p50_ms": float(np.median(inference)) if inference else math.nan,
            "stages_p50_ms": self.stage_percentiles(),
            "frames_received": self.received,
            "frames_classified": self.classified,
            "frames_dropped": self.dropped,
            "frames_bad": self.bad,
            "frames_without_model": self.without_model,
            "errors": self.errors,
            "model_loads": self.loads,
            "model_load_failures": self.load_failures,
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
        self._stop.set()
        with self._cond:
            self._wake_worker()
        if self._worker is not None:
            self._worker.join(timeout=3.0)
        if self._waiter is not None and self._worker is not None and not self._worker.is_alive():
            self._waiter.close()
        if self._loader is not None:
            # A load in progress (an engine build) cannot be interrupted; it is abandoned after the timeout
            # and closes what it loaded when it ends.
            self._loader.join(timeout=3.0)
        with self._cond:
            models = [m for m in (self.model, self._staged) if m is not None]
            self._staged = None
        for model in models:
            model.backend.close()
        if self._worker is not None and self._worker.is_alive():
            self.get_logger().warning("classifier worker did not stop within 3 s")
        elif self._worker is not None:
            self.get_logger().info(f"classifier stopped after {self.classified} frames: worker joined")
        super().destroy_node()


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
