"""trainer_node: fine-tunes a classifier on the recorded dataset and hands the model to the classifier.

Services:

* ``~/train`` (std_srvs/Trigger) starts a run on ``dataset_dir`` with the current parameters, in a
  background thread, and answers at once; it is refused, with the reason, while a run is going,
  during shutdown, for an invalid option or a missing dataset directory. Everything slower
  (importing torch, checking the pretrained weights, reading the dataset) happens in the run and a
  failure there ends it with state ``failed`` and the error on ``~/status``, ``/diagnostics`` and
  the log (for example the :class:`~dli_perception.errors.WeightsNotFoundError` that says where
  to put the ImageNet weights, or to use ``weights:=none``);
* ``~/cancel`` (Trigger) stops the run between two batches; the best completed epoch stays in the
  checkpoint directory and ``model_dir`` is not replaced.

Topics:

* ``~/progress`` (std_msgs/String, EVENTS): JSON of
  :meth:`~dli_perception.core.training.ProgressEvent.to_dict` (``phase`` load, features, train,
  val, epoch, export, done; ``epoch``, ``epochs``, ``batch``, ``batches``, ``loss``, ``accuracy``,
  ``eta_s`` for the whole run, ``val_loss``, ``val_accuracy``, ``best_val_accuracy``), batch events
  throttled to ``progress_rate_hz``, phase changes and epoch ends always sent; non-finite numbers
  become null;
* ``model_updated`` (std_msgs/String, LATCHED): the absolute path of ``model_dir`` after each
  successful export. The classifier subscribes with the EVENTS profile (volatile), which a
  transient-local publisher matches; a subscriber that asks for transient-local durability gets
  the latest model even when it starts after the run;
* ``~/status`` (std_msgs/String, LATCHED): JSON of the last run's outcome (``status`` completed,
  early_stopped, cancelled or failed; ``model_dir``, ``exported``, ``best_val_acc``,
  ``best_epoch``, ``epochs_run``, ``classes``, ``checkpoint``, ``confusion`` (validation of the best
  epoch: rows true class, columns predicted), ``error``, ``duration_s``; decoded by
  :class:`dli_perception.core.contracts.TrainStatus`);
* ``/diagnostics``: state (idle, training, failed), epoch, loss, accuracy, time left, last result.

The model directory is written by :func:`~dli_perception.core.export.export_model_dir`: built beside
``model_dir`` and swapped in, so a classifier never reads a half-written model and a failed or
cancelled run leaves the previous model in place. Checkpoints go to ``checkpoint_dir`` (default
``<model_dir>.checkpoints``).

The node only wires: its parameters are the ``node`` rows of the training options table
(:mod:`dli_perception.core.training.options`, which also makes the CLI's flags) and a run is
:func:`dli_perception.core.training.service.train_and_export` in a worker thread.

Parameters are read when ``~/train`` is called, so ``ros2 param set`` between runs applies to the
next run. ``num_workers`` defaults to 0: DataLoader worker processes are forked, and forking beside
rclpy's threads is unsafe. torch is imported by the first run, not at start-up.

Shutdown (SIGINT/SIGTERM): the run is cancelled and joined for at most ``STOP_TIMEOUT_S`` (a run
stops between two batches; launch sends SIGKILL 10 s after SIGINT); the previous model directory
is left intact.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dli_perception.core.contracts import TrainProgress, TrainStatus
from dli_perception.core.training import ProgressEvent, TrainConfig
from dli_perception.core.training.options import TRAIN_OPTIONS, TrainOption, config_from_options
from dli_perception.core.training.service import TrainJob, job_from_options, train_and_export
from dli_perception.errors import ConfigError, DatasetError, DliPerceptionError, TrainingCancelledError
from dli_perception.nodes.diagnostics import ERROR, OK, DiagnosticsPublisher
from dli_perception.nodes.params import Param, declare
from dli_perception.nodes.qos import EVENTS, LATCHED
from dli_perception.nodes.runtime import node_main, request_hard_exit

STOP_TIMEOUT_S = 6.0
"""Longest destroy_node waits for a cancelled run to stop (launch: SIGTERM after 5 s, SIGKILL after 10 s)."""

IDLE, TRAINING, FAILED = "idle", "training", "failed"


def _param(option: TrainOption) -> Param:
    return Param(
        option.name,
        option.node_value,
        option.help,
        choices=option.choices,
        min=option.min,
        max=option.max,
        check=option.check,
    )


PARAMS = [_param(o) for o in TRAIN_OPTIONS if o.node]
"""The node's parameters: the ``node`` rows of :data:`~dli_perception.core.training.options.TRAIN_OPTIONS`."""


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def config_from_values(values: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the node's parameter values; :class:`ConfigError` when invalid."""
    return config_from_options(values)


@dataclass
class Job:
    """One run of the node: the core's :class:`TrainJob`, numbered and timed."""

    number: int
    job: TrainJob
    started: float = field(default_factory=time.monotonic)

    @property
    def cancel(self) -> threading.Event:
        return self.job.cancel

    @property
    def model_dir(self) -> Path:
        return self.job.model_dir

    @property
    def dataset_dir(self) -> Path:
        return self.job.dataset_dir


class TrainerNode(Node):
    """Trains on ``~/train``, reports progress, exports ``model_dir``, announces it on ``model_updated``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("trainer_node", **kwargs)
        self._values = declare(self, PARAMS, on_change=self._on_params)
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._worker: threading.Thread | None = None
        self._closing = False
        self.state = IDLE
        self.runs: Counter[str] = Counter()
        self.last_event: dict[str, Any] = {}
        self.last_result: dict[str, Any] = {}
        self.last_error = ""
        self._last_phase = ""
        self._last_progress_pub = 0.0

        self.progress_pub = self.create_publisher(String, "~/progress", EVENTS)
        self.model_pub = self.create_publisher(String, "model_updated", LATCHED)
        self.status_pub = self.create_publisher(String, "~/status", LATCHED)
        self.train_srv = self.create_service(Trigger, "~/train", self._on_train)
        self.cancel_srv = self.create_service(Trigger, "~/cancel", self._on_cancel)
        self.diagnostics = DiagnosticsPublisher(self, self._diagnostics)
        self.get_logger().info(
            f"ready: call {self.train_srv.srv_name} to train on {self._values['dataset_dir']} -> "
            f"{self._values['model_dir']}"
        )

    # -- parameters -----------------------------------------------------------------------------
    def _on_params(self, changes: dict[str, Any]) -> None:
        with self._lock:
            self._values.update(changes)

    # -- services -------------------------------------------------------------------------------
    def _on_train(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        ok, message = self.start_training()
        response.success, response.message = ok, message
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().warning(f"train refused: {message}")
        return response

    def start_training(self) -> tuple[bool, str]:
        """Start a run in the background with the current parameters; returns (started, reason or summary)."""
        with self._lock:
            if self._closing:
                return False, "the trainer is shutting down"
            if self.state == TRAINING and self._job is not None:
                return False, (
                    f"training is already running (run {self._job.number}, {self._progress_text()}); "
                    "call ~/cancel to stop it first"
                )
            values = dict(self._values)
            try:
                train_job = job_from_options(values)
            except (ConfigError, DatasetError) as exc:
                return False, str(exc)
            self.runs["started"] += 1
            job = Job(number=self.runs["started"], job=train_job)
            self._job = job
            self.state = TRAINING
            self.last_event = {}
            self._last_phase = ""
            self.last_error = ""
            self._worker = threading.Thread(target=self._run, args=(job,), name="trainer", daemon=True)
            self._worker.start()
        config = train_job.config
        return True, (
            f"training started (run {job.number}): {train_job.dataset_dir} -> {train_job.model_dir}, "
            f"{config.backbone} {config.mode}, "
            f"{config.epochs} epochs, weights {config.weights}; progress on {self.progress_pub.topic_name}"
        )

    def _on_cancel(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            job = self._job if self.state == TRAINING else None
        if job is None:
            response.success, response.message = False, "no training is running"
        else:
            job.cancel.set()
            response.success = True
            response.message = (
                f"cancelling run {job.number} after the current batch; {job.model_dir} will not be replaced"
            )
            self.get_logger().info(response.message)
        return response

    # -- the run (worker thread) ----------------------------------------------------------------
    def _run(self, job: Job) -> None:
        outcome: dict[str, Any]
        try:
            outcome = self._train_and_export(job)
        except TrainingCancelledError:
            outcome = {
                "status": "cancelled",
                "message": "cancelled while reading the dataset; nothing was trained",
            }
        except DliPerceptionError as exc:
            outcome = {"status": "failed", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a run must never take the node down; report it instead
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        self._finish(job, outcome)

    def _train_and_export(self, job: Job) -> dict[str, Any]:
        outcome = train_and_export(job.job, on_progress=self._on_progress)
        result = outcome.result
        summary: dict[str, Any] = {
            "status": result.status,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "classes": list(result.classes),
            "checkpoint": result.checkpoint_path or "",
            "skipped_images": len(result.dataset.skipped),
            "confusion": [[int(n) for n in row] for row in result.confusion],
            "task": result.task,
            "headline": result.headline(),
            "metrics": {
                k: float(v)
                for k, v in result.metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            },
        }
        if not outcome.exported:
            summary["status"] = "cancelled"
            summary["message"] = f"cancelled after {len(result.history)} epoch(s); {job.model_dir} was not replaced" + (
                f"; the best epoch is in {result.checkpoint_path}" if result.checkpoint_path else ""
            )
            return summary
        summary.update(exported=True, model_dir=str(job.model_dir))
        return summary

    def _on_progress(self, event: ProgressEvent) -> None:
        """Progress callback of the core (worker thread): keep the newest, publish throttled."""
        force = event.phase in ("load", "epoch", "done", "export") or event.phase != self._last_phase
        self._last_phase = event.phase
        self._publish_event(event, force=force)
        if event.phase == "epoch":
            self.get_logger().info(
                f"epoch {event.epoch}/{event.epochs} {event.stage}: train loss {_f(event.loss)} acc "
                f"{_f(event.accuracy)}, val loss {_f(event.val_loss)} acc {_f(event.val_accuracy)}"
                f"{' (best so far)' if event.message == 'improved' else ''}, "
                f"about {_f(event.eta_s, 0)} s left"
            )

    def _publish_event(self, event: ProgressEvent, *, force: bool) -> None:
        data = _finite(event.to_dict())
        now = time.monotonic()
        with self._lock:
            self.last_event = data
            if not force and now - self._last_progress_pub < 1.0 / float(self._values["progress_rate_hz"]):
                return
            self._last_progress_pub = now
        self._publish(self.progress_pub, TrainProgress.from_dict(data).encode())

    def _finish(self, job: Job, outcome: dict[str, Any]) -> None:
        status = outcome["status"]
        outcome = {
            "run": job.number,
            "dataset_dir": str(job.dataset_dir),
            "model_dir": "",
            "exported": False,
            "error": "",
            "message": "",
            **outcome,
            "duration_s": round(time.monotonic() - job.started, 3),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with self._lock:
            self.runs[status] += 1
            self.last_result = outcome
            self.last_error = outcome["error"]
            self.state = FAILED if status == "failed" else IDLE
        log = self.get_logger()
        if status == "failed":
            log.error(f"training run {job.number} failed: {outcome['error']}")
        elif outcome["exported"]:
            log.info(
                f"run {job.number} {status}: {outcome['headline']} at epoch "
                f"{outcome['best_epoch']}; model exported to {job.model_dir}"
            )
        else:
            log.info(f"run {job.number} {status}: {outcome['message']}")
        self._publish(self.status_pub, TrainStatus.from_dict(_finite(outcome)).encode())
        if outcome["exported"]:
            self._publish(self.model_pub, str(job.model_dir))
        self._publish_diagnostics()

    def _publish(self, publisher, data: str) -> None:
        """Publish from the worker; once shutdown began (publisher or context gone) the message is dropped."""
        try:
            publisher.publish(String(data=data))
        except Exception as exc:  # noqa: BLE001 - a failed publish must not end the run
            self._publish_failed(exc)

    def _publish_diagnostics(self) -> None:
        try:
            self.diagnostics.publish()
        except Exception as exc:  # noqa: BLE001 - as in _publish
            self._publish_failed(exc)

    def _publish_failed(self, exc: Exception) -> None:
        if not self._closing:
            self.get_logger().warning(f"cannot publish: {exc}", throttle_duration_sec=5.0)

    # -- health ---------------------------------------------------------------------------------
    def _progress_text(self) -> str:
        e = self.last_event
        if not e:
            return "starting"
        text = f"{e.get('phase')} epoch {e.get('epoch')}/{e.get('epochs')}"
        if e.get("eta_s") is not None:
            text += f", about {e['eta_s']:.0f} s left"
        return text

    def _diagnostics(self):
        with self._lock:
            e, r = self.last_event, self.last_result
            values: dict[str, Any] = {
                "state": self.state,
                "dataset_dir": self._values["dataset_dir"],
                "model_dir": self._values["model_dir"],
                "phase": e.get("phase", ""),
                "epoch": e.get("epoch", 0),
                "epochs": e.get("epochs", 0),
                "batch": e.get("batch", 0),
                "batches": e.get("batches", 0),
                "loss": _or_blank(e.get("loss")),
                "accuracy": _or_blank(e.get("accuracy")),
                "val_accuracy": _or_blank(e.get("val_accuracy")),
                "best_val_accuracy": _or_blank(e.get("best_val_accuracy")),
                "eta_s": _or_blank(e.get("eta_s")),
                "runs_started": self.runs["started"],
                "runs_completed": self.runs["completed"] + self.runs["early_stopped"],
                "runs_cancelled": self.runs["cancelled"],
                "runs_failed": self.runs["failed"],
                "last_status": r.get("status", ""),
                "last_best_val_acc": _or_blank(r.get("best_val_acc")),
                "last_model_dir": r.get("model_dir", ""),
                "last_error": self.last_error,
            }
            state = self.state
            progress = self._progress_text()
        if state == FAILED:
            return ERROR, f"last run failed: {self.last_error}", values
        if state == TRAINING:
            return OK, f"training: {progress}", values
        return OK, f"idle (last run: {r['status']})" if r else "idle", values

    # -- shutdown -------------------------------------------------------------------------------
    def destroy_node(self) -> None:
        """Cancel a run and wait for it (bounded); the previous model directory stays as it was."""
        if not hasattr(self, "_lock"):  # the constructor failed part-way
            super().destroy_node()
            return
        with self._lock:
            self._closing = True
            job, worker = self._job, self._worker
        if worker is not None and worker.is_alive() and job is not None:
            job.cancel.set()
            self.get_logger().info(f"shutting down: cancelling run {job.number}")
            worker.join(timeout=STOP_TIMEOUT_S)
            if worker.is_alive():
                self.get_logger().warning(
                    f"run {job.number} did not stop within {STOP_TIMEOUT_S:g} s "
                    "(a long batch or the export); "
                    f"{job.model_dir} is replaced only by a finished export"
                )
                request_hard_exit(f"training run {job.number} of trainer_node")
        super().destroy_node()


def _or_blank(value: Any) -> Any:
    return "" if value is None else value


def _f(value: float | None, digits: int = 3) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


main = node_main(TrainerNode)

if __name__ == "__main__":
    import sys

    sys.exit(main())
