"""A live classifier: the newest frame, classified by a worker thread, with models hot-swapped in.

:class:`LiveClassifier` holds everything between "a frame arrived" and "here is its result",
with no ROS in it (``nodes/classifier_node.py`` wires it to topics, parameters and diagnostics):

* **newest-frame slot**: :meth:`LiveClassifier.offer` keeps one frame; a frame replaced before
  the worker took it is counted as dropped, so frames are never queued;
* **loader** thread: :meth:`LiveClassifier.request_load` loads a model directory with
  :class:`~dli_perception.core.backend_options.BackendOptions` (the newest request wins); the
  backend checks the model's metadata; a failed load is counted and logged and the old model
  keeps serving;
* **worker** thread: converts the frame (``to_rgb8``), runs the model's own preprocessing and the
  backend, and decides by the model's task (``metadata.json`` ``task``): classification filters the
  probabilities through :class:`~dli_perception.core.decision.DecisionFilter` (result:
  :class:`~dli_perception.core.contracts.Scores`); regression smooths the target point and
  multi-label applies per-label thresholds (:mod:`dli_perception.core.task_heads`; results:
  :class:`~dli_perception.core.contracts.XYResult`, :class:`~dli_perception.core.contracts.LabelSet`).
  It hands the first output (label, point or active labels) out as soon as it is decided, then the
  full result; between two frames it swaps in a freshly loaded model (with a fresh decision filter
  or head), of any task, and announces its output names (a
  :class:`~dli_perception.core.contracts.ClassList`);
* **statistics**: :class:`~dli_perception.core.live_stats.LiveStats`.

Frames come from a :class:`FrameFeed`: a push feed (the default) only hears when the worker is
idle, so that the producer can hold frames back while it is busy; a pulling feed lets the idle
worker sleep in :meth:`FrameFeed.wait` and take frames itself (:meth:`FrameFeed.poll`, which
calls :meth:`LiveClassifier.offer`), also right after each frame.

The feed interface and the records the classifier passes around (:class:`LoadRequest`,
:class:`ServingModel`, :class:`LiveResult`, :class:`Outputs` ...) are in
:mod:`dli_perception.core.live_types`, re-exported here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.backend_options import BackendOptions
from dli_perception.core.contracts import ClassList, LabelSet, Scores, XYResult, stamp_ns_of
from dli_perception.core.decision import DecisionConfig, DecisionFilter
from dli_perception.core.imaging import to_rgb8
from dli_perception.core.live_stats import STAGES, LiveStats
from dli_perception.core.live_types import (
    FrameFeed,
    LiveResult,
    LoadRequest,
    Log,
    Outputs,
    PendingFrame,
    ServingModel,
    python_log,
)
from dli_perception.core.logtext import printable, quoted
from dli_perception.core.preprocess import preprocess
from dli_perception.core.task_heads import TaskConfig, make_head
from dli_perception.errors import ConfigError, ImageConversionError

__all__ = [
    "FrameFeed",
    "LiveClassifier",
    "LiveResult",
    "LoadRequest",
    "Log",
    "Outputs",
    "PendingFrame",
    "ServingModel",
    "python_log",
]


class LiveClassifier:
    """Newest-frame slot, loader and worker threads, hot swap, decision filter and statistics."""

    def __init__(
        self,
        decision: DecisionConfig,
        outputs: Outputs | None = None,
        *,
        feed: FrameFeed | None = None,
        log: Log = python_log,
        max_rate_hz: float = 0.0,
        on_load_failed: Callable[[LoadRequest], None] | None = None,
        task_config: TaskConfig | None = None,
    ) -> None:
        self.decision_config = decision  # replaced to change the decision; the worker gives the model a new filter
        self.task_config = task_config or TaskConfig()  # the same for the regression / multi-label head
        self.outputs = outputs or Outputs()
        self.feed = feed or FrameFeed()  # may be replaced before start()
        self.max_rate_hz = float(max_rate_hz)
        self.on_load_failed = on_load_failed
        self.stats = LiveStats()
        self.model: ServingModel | None = None
        self.loading = False
        self.last_error = ""
        self.last_load_error = ""
        self._log = log
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._pending: PendingFrame | None = None
        self._staged: ServingModel | None = None
        self._load_request: LoadRequest | None = None
        self._worker: threading.Thread | None = None
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work_loop, name="classifier_worker", daemon=True)
        self._loader = threading.Thread(target=self._load_loop, name="classifier_loader", daemon=True)
        self._worker.start()
        self._loader.start()

    # -- frames and model requests (any thread: store and return) ---------------------------------
    def offer(self, msg: Any, skipped: int = 0) -> None:
        """Keep ``msg`` (a sensor_msgs/Image or alike) as the newest frame; one replaced untaken is dropped.

        ``skipped``: frames the producer knows were lost before this one; they count as received and dropped.
        """
        now = time.monotonic()
        now_ns = time.time_ns()
        s = self.stats
        with self._cond:
            s.received += 1 + skipped
            s.dropped += skipped
            if self.model is None and self._staged is None:
                s.without_model += 1
                return
            if self._pending is not None:
                s.dropped += 1
            self._pending = PendingFrame(msg, now, now_ns)
            self.feed.hold()
            s.max_pending = max(s.max_pending, 1)
            self._cond.notify_all()

    def request_load(self, model_dir: str, options: BackendOptions, reason: str, context: Any = None) -> None:
        """Ask the loader thread to load ``model_dir`` with ``options`` (the newest request wins)."""
        request = LoadRequest(os.path.expanduser(model_dir), options, reason, context)
        with self._cond:
            self._load_request = request
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Frames stored and not yet taken by the worker: 0 or 1, never more."""
        return 0 if self._pending is None else 1

    @property
    def load_pending(self) -> bool:
        """A load is asked for and not finished (the loader is at it, or has yet to start it)."""
        return self.loading or self._load_request is not None

    def status(self) -> str:
        """``serving``, ``loading``, ``waiting for a model`` or ``load failed`` (plus what still serves)."""
        busy = self.load_pending or self._staged is not None
        if self.model is None:
            if busy:
                return "loading"
            return "load failed" if self.last_load_error else "waiting for a model"
        if busy:
            return "loading a new model; previous model serving"
        return "load failed; previous model serving" if self.last_load_error else "serving"

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
        self._log("info", f"loading model {quoted(req.model_dir)} ({req.reason}), backend {req.options.backend}")
        t0 = time.monotonic()
        try:
            backend, selection = req.options.load(req.model_dir)
            try:
                backend.warmup(1)
                meta = backend.metadata
                task = meta.task
                decision = DecisionFilter(meta.classes, self.decision_config) if task == tasks.CLASSIFICATION else None
                task_config = self.task_config
                head = make_head(task, task_config, meta.classes, meta.thresholds)
            except BaseException:
                backend.close()
                raise
        except Exception as exc:  # ModelError, BackendUnavailableError, ConfigError, or a library's own
            self.stats.load_failures += 1
            self.last_load_error = f"loading {quoted(req.model_dir)} failed: {type(exc).__name__}: {printable(exc)}"
            self.last_error = self.last_load_error
            serving = (
                f"{quoted(self.model.model_dir)} keeps serving" if self.model is not None else "no model is serving"
            )
            self._log("error", f"{self.last_load_error}; {serving}")
            if self.on_load_failed is not None:
                self.on_load_failed(req)
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
            task=task,
            head=head,
            thresholds=dict(meta.thresholds),
        )
        if head is not None and head.notes:
            self._log("warning", f"{quoted(req.model_dir)}: " + "; ".join(head.notes))
        with self._cond:
            stopped = self._stop.is_set()
            if not stopped:
                replaced, self._staged = self._staged, model  # a staged model the worker never took
                self.stats.loads += 1
                self.last_load_error = ""
                self.last_error = ""
                self._wake_worker()
        if stopped:
            model.backend.close()
            return
        if replaced is not None:
            replaced.backend.close()
        self._log(
            "info",
            f"model {quoted(req.model_dir)} loaded in {model.load_s:.2f} s: {task}, {len(model.classes)} "
            f"outputs {model.classes}, {selection.summary()}",
        )

    # -- worker thread ----------------------------------------------------------------------------
    def _work_loop(self) -> None:
        next_due = 0.0
        pulls = self.feed.pulls
        while True:
            with self._cond:
                while not pulls and not self._stop.is_set() and self._pending is None and self._staged is None:
                    self.feed.release()  # idle: let the producer deliver the next frame
                    self._cond.wait()
                if self._stop.is_set():
                    return
                idle = self._pending is None and self._staged is None
            if idle:  # only a pulling feed: sleep until a frame arrives, then take it here
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
                self.stats.errors += 1
                self.last_error = f"{type(exc).__name__}: {printable(exc)}"
                self._log("error", f"classification failed: {self.last_error}", 5.0)
            if self.max_rate_hz > 0:
                next_due = max(next_due + 1.0 / self.max_rate_hz, time.monotonic())
                if self._stop.wait(max(0.0, next_due - time.monotonic())):
                    return
            self.feed.poll()

    def _wait_for_frame(self) -> None:
        try:
            self.feed.wait(0.5)
        except Exception as exc:  # noqa: BLE001 - shutting down (handles destroyed) or an error in the wait: retry soon
            if self._stop.wait(0.05):
                return
            self._log("debug", f"waiting for a frame: {type(exc).__name__}: {exc}")
            return
        self.feed.poll()

    def _wake_worker(self) -> None:
        """Wake the worker from its condition wait and from its frame wait (call with ``_cond`` held)."""
        self._cond.notify_all()
        self.feed.wake()

    def _swapped(self, model: ServingModel, previous: ServingModel | None) -> None:
        self.outputs.classes(ClassList(tuple(model.classes)))
        if previous is not None:
            previous.backend.close()
            was = previous.task if previous.task != model.task else ""
            self._log(
                "info",
                f"now serving {quoted(model.model_dir)} ({model.task}; was {quoted(previous.model_dir)}"
                + (f", {was}: the outputs change task" if was else "")
                + ")",
            )

    def _classify(self, model: ServingModel, frame: PendingFrame) -> None:
        msg = frame.msg
        t_start = time.perf_counter()
        wait_ms = (time.monotonic() - frame.received) * 1000.0
        self._apply_decision_config(model)
        self._apply_task_config(model)
        try:
            rgb = to_rgb8(msg)
            t_converted = time.perf_counter()
            preprocess(rgb, model.preprocess, out=model.batch[0])
        except (ImageConversionError, ConfigError) as exc:
            self.stats.bad += 1
            self.last_error = (
                f"bad frame ({quoted(getattr(msg, 'encoding', '?'))}, {getattr(msg, 'width', '?')}x"
                f"{getattr(msg, 'height', '?')}): {printable(exc)}"
            )
            self._log("warning", f"skipping {self.last_error}", 5.0)
            return
        t1 = time.perf_counter()
        outputs = model.backend.infer(model.batch)[0]  # probabilities (classification) or raw outputs
        t2 = time.perf_counter()
        inference_ms = (t2 - t1) * 1000.0
        header = msg.header
        # The first output goes out as soon as it is decided; the full result follows.
        if model.task == tasks.REGRESSION:
            point = model.head.update(outputs)
            self.outputs.point(point.x, point.y, header)
            summary = f"x={point.x:.3f} y={point.y:.3f}"
        elif model.task == tasks.MULTILABEL:
            found = model.head.update(outputs)
            self.outputs.labels(found.active)
            summary = ",".join(found.active)
        else:
            decision = model.decision.update(outputs)
            self.outputs.label(decision.label)
            summary = decision.label
        latency_ms = (time.monotonic() - frame.received) * 1000.0
        stamp_ns = stamp_ns_of(header)
        stages = (
            (frame.received_ns - stamp_ns) / 1e6,
            wait_ms,
            (t_converted - t_start) * 1000.0,
            (t1 - t_converted) * 1000.0,
            inference_ms,
            (time.perf_counter() - t2) * 1000.0,
        )
        common = {
            "stamp_ns": stamp_ns,
            "frame_id": header.frame_id,
            "latency_ms": round(latency_ms, 3),
            "inference_ms": round(inference_ms, 3),
            "model": model.model_dir,
            "stages_ms": {name: round(v, 3) for name, v in zip(STAGES, stages, strict=True)},
        }
        if model.task == tasks.REGRESSION:
            xy = XYResult(x=point.x, y=point.y, raw_x=point.raw_x, raw_y=point.raw_y, **common)
            result = LiveResult(None, None, rgb, header, xy=xy)
        elif model.task == tasks.MULTILABEL:
            label_set = LabelSet(
                labels=found.active,
                scores={k: round(v, 6) for k, v in found.scores.items()},
                thresholds=found.thresholds,
                changed=found.changed,
                **common,
            )
            result = LiveResult(None, None, rgb, header, label_set=label_set)
        else:
            scores = Scores(
                label=decision.label,
                score=round(decision.score, 6),
                raw_label=decision.raw_label,
                raw_score=round(decision.raw_score, 6),
                scores={name: float(p) for name, p in zip(model.classes, outputs, strict=True)},
                changed=decision.changed,
                **common,
            )
            result = LiveResult(scores, decision, rgb, header)
        self.outputs.result(result)
        self.stats.record(summary, latency_ms, inference_ms, stages)

    def _apply_decision_config(self, model: ServingModel) -> None:
        """Give ``model`` a fresh decision filter after the decision configuration changed."""
        config = self.decision_config
        if model.decision is None or model.decision.config is config or model.refused_config is config:
            return
        try:
            model.decision = DecisionFilter(model.classes, config)
        except ConfigError as exc:
            model.refused_config = config
            self.last_error = f"decision parameters not applied to {quoted(model.model_dir)}: {exc}"
            self._log("error", self.last_error)

    def _apply_task_config(self, model: ServingModel) -> None:
        """Give ``model`` a fresh regression / multi-label head after the task configuration changed."""
        config = self.task_config
        if model.head is None or model.head.config is config or model.refused_task_config is config:
            return
        try:
            model.head = make_head(model.task, config, model.classes, model.thresholds)
        except ConfigError as exc:
            model.refused_task_config = config
            self.last_error = f"task parameters not applied to {quoted(model.model_dir)}: {exc}"
            self._log("error", self.last_error)
            return
        if model.head.notes:
            self._log("warning", f"{quoted(model.model_dir)}: " + "; ".join(model.head.notes))

    # -- shutdown ---------------------------------------------------------------------------------
    def stop(self, timeout_s: float = 3.0) -> bool:
        """Stop and join the worker and loader (bounded), release the models; True if the worker ended.

        A load in progress (an engine build) cannot be interrupted; it is abandoned after the
        timeout and closes what it loaded when it ends.
        """
        self._stop.set()
        with self._cond:
            self._wake_worker()
        if self._worker is not None:
            self._worker.join(timeout=timeout_s)
        if self._loader is not None:
            self._loader.join(timeout=timeout_s)
        with self._cond:
            models = [m for m in (self.model, self._staged) if m is not None]
            self._staged = None
        for model in models:
            model.backend.close()
        return self._worker is None or not self._worker.is_alive()
