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

Parameters are read when ``~/train`` is called, so ``ros2 param set`` between runs applies to the
next run. ``num_workers`` defaults to 0: DataLoader worker processes are forked, and forking beside
rclpy's threads is unsafe. torch is imported by the first run, not at start-up.

Shutdown (SIGINT/SIGTERM): the run is cancelled and joined for at most ``STOP_TIMEOUT_S`` (a run
stops between two batches; launch sends SIGKILL 10 s after SIGINT); the previous model directory
is left intact.
"""

from __future__ import annotations

import datetime as _dt
import json
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

from dli_perception.core.training import (
    BACKBONES,
    CLASS_BALANCE,
    DEVICES,
    MODES,
    ProgressEvent,
    TrainConfig,
)
from dli_perception.errors import ConfigError, DliPerceptionError, TrainingCancelledError
from dli_perception.nodes.diagnostics import ERROR, OK, DiagnosticsPublisher
from dli_perception.nodes.params import Param, declare
from dli_perception.nodes.qos import EVENTS, LATCHED
from dli_perception.nodes.runtime import node_main, request_hard_exit

STOP_TIMEOUT_S = 6.0
"""Longest destroy_node waits for a cancelled run to stop (launch: SIGTERM after 5 s, SIGKILL after 10 s)."""

CHECKPOINT_SUFFIX = ".checkpoints"

IDLE, TRAINING, FAILED = "idle", "training", "failed"

_DEFAULTS = TrainConfig()


def _non_empty(value: Any) -> str | None:
    return None if str(value).strip() else "must not be empty"


PARAMS = [
    Param(
        "dataset_dir",
        "~/dli_datasets/default",
        "Dataset to train on: one sub-directory of images per class "
        "(the recorder_node's dataset_dir); '~' is expanded.",
        check=_non_empty,
    ),
    Param(
        "model_dir",
        "~/dli_models/default",
        "Model directory written after a successful run (replaced "
        "atomically); its path is published on model_updated.",
        check=_non_empty,
    ),
    Param("checkpoint_dir", "", "Where best.pt and last.pt go; empty: <model_dir>.checkpoints."),
    Param(
        "mode",
        _DEFAULTS.mode,
        "head: train the new last layer on cached backbone features (fast); "
        "finetune: every layer; head-then-finetune: head epochs, then fine-tuning.",
        choices=MODES,
    ),
    Param("epochs", _DEFAULTS.epochs, "Epochs in all.", min=1, max=100_000),
    Param(
        "head_epochs",
        _DEFAULTS.head_epochs,
        "Head epochs of head-then-finetune; 0: half of epochs.",
        min=0,
        max=100_000,
    ),
    Param(
        "batch_size",
        _DEFAULTS.batch_size,
        "Images per batch (16 fits a 4 GB Jetson at 224 px).",
        min=1,
        max=4096,
    ),
    Param(
        "lr",
        _DEFAULTS.lr,
        "Learning rate of the head; the backbone gets lr x 0.1 when fine-tuned.",
        min=1e-9,
        max=10.0,
    ),
    Param(
        "weights",
        _DEFAULTS.weights,
        "Initial weights: 'imagenet' (torch hub cache, no download), 'none' "
        "(random, much lower accuracy) or the path of a .pth state dict.",
        check=_non_empty,
    ),
    Param(
        "download_weights",
        _DEFAULTS.download_weights,
        "Download the ImageNet weights when they are not cached (needs network).",
    ),
    Param("backbone", _DEFAULTS.backbone, "Network whose last layer is replaced.", choices=sorted(BACKBONES)),
    Param("image_size", _DEFAULTS.preprocess.size, "Model input size, pixels (square).", min=8, max=4096),
    Param(
        "val_fraction", _DEFAULTS.val_fraction, "Share of each class kept for validation.", min=0.01, max=0.99
    ),
    Param(
        "seed", _DEFAULTS.seed, "Seed of the split, initialisation and augmentation.", min=0, max=2**31 - 1
    ),
    Param(
        "early_stop_patience",
        _DEFAULTS.early_stop_patience,
        "Stop after this many epochs without better validation accuracy; 0: never.",
        min=0,
        max=100_000,
    ),
    Param("augment", _DEFAULTS.augment, "Random crops and colour jitter on training images."),
    Param("hflip", _DEFAULTS.hflip, "Random horizontal flips (they swap left and right classes)."),
    Param("class_balance", _DEFAULTS.class_balance, "How rare classes are weighted.", choices=CLASS_BALANCE),
    Param("device", _DEFAULTS.device, "Where to train (auto: CUDA when available).", choices=DEVICES),
    Param(
        "num_workers",
        0,
        "DataLoader worker processes; keep 0 in a node (forking beside rclpy's threads is unsafe).",
        min=0,
        max=64,
    ),
    Param("torch_threads", 0, "CPU threads torch may use; 0: torch's default (all cores).", min=0, max=1024),
    Param(
        "progress_rate_hz",
        4.0,
        "Most batch progress messages per second on ~/progress, Hz.",
        min=0.1,
        max=1000.0,
    ),
]


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def expand(path: str) -> Path:
    """A path parameter as an absolute path (``~`` expanded, symlinks kept)."""
    return Path(path).expanduser().absolute()


def config_from_values(values: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the node's parameter values; :class:`ConfigError` when invalid."""
    from dli_perception.core.preprocess import PreprocessConfig

    size = int(values["image_size"])
    return TrainConfig(
        mode=values["mode"],
        backbone=values["backbone"],
        weights=str(values["weights"]).strip(),
        download_weights=bool(values["download_weights"]),
        epochs=int(values["epochs"]),
        head_epochs=int(values["head_epochs"]),
        batch_size=int(values["batch_size"]),
        lr=float(values["lr"]),
        val_fraction=float(values["val_fraction"]),
        seed=int(values["seed"]),
        early_stop_patience=int(values["early_stop_patience"]),
        augment=bool(values["augment"]),
        hflip=bool(values["hflip"]),
        class_balance=values["class_balance"],
        device=values["device"],
        num_workers=int(values["num_workers"]),
        preprocess=PreprocessConfig.for_size(size),
    )


def check_weights(config: TrainConfig) -> None:
    """Fail fast, before the dataset is read, when the pretrained weights cannot be found.

    Raises the core's :class:`~dli_perception.errors.WeightsNotFoundError` (which says where the file
    must be). Imports torch.
    """
    from dli_perception.core.training import build_model, imagenet_weights_path

    weights = config.weights
    if weights.lower() == "none":
        return
    if weights.lower() == "imagenet":
        if config.download_weights or imagenet_weights_path(config.backbone).is_file():
            return
    elif Path(weights).expanduser().is_file():
        return
    build_model(config.backbone, num_classes=2, weights=weights)  # raises with the full explanation


@dataclass
class Job:
    """One run: what it trains on, where it writes, how it is cancelled."""

    number: int
    config: TrainConfig
    dataset_dir: Path
    model_dir: Path
    checkpoint_dir: Path
    torch_threads: int
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)


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
                config = config_from_values(values)
            except ConfigError as exc:
                return False, f"invalid training options: {exc}"
            dataset = expand(values["dataset_dir"])
            if not dataset.is_dir():
                return False, (
                    f"dataset_dir {dataset} does not exist; record images first (recorder_node) "
                    "or set dataset_dir"
                )
            model_dir = expand(values["model_dir"])
            ckpt = values["checkpoint_dir"].strip()
            checkpoint_dir = (
                expand(ckpt) if ckpt else model_dir.parent / f"{model_dir.name}{CHECKPOINT_SUFFIX}"
            )
            real_dataset = dataset.resolve()
            for name, path in (("model_dir", model_dir), ("checkpoint_dir", checkpoint_dir)):
                real = path.resolve()  # through symlinks: where the files would really go
                if real == real_dataset or real_dataset in real.parents:
                    return False, f"{name} {path} must not be inside dataset_dir {dataset} (it resolves to {real})"
            self.runs["started"] += 1
            job = Job(
                number=self.runs["started"],
                config=config,
                dataset_dir=dataset,
                model_dir=model_dir,
                checkpoint_dir=checkpoint_dir,
                torch_threads=int(values["torch_threads"]),
            )
            self._job = job
            self.state = TRAINING
            self.last_event = {}
            self._last_phase = ""
            self.last_error = ""
            self._worker = threading.Thread(target=self._run, args=(job,), name="trainer", daemon=True)
            self._worker.start()
        return True, (
            f"training started (run {job.number}): {dataset} -> {model_dir}, "
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
        import torch

        from dli_perception.core.export import export_model_dir
        from dli_perception.core.training import train

        if job.torch_threads:
            torch.set_num_threads(job.torch_threads)
        check_weights(job.config)
        result = train(
            job.dataset_dir,
            job.config,
            checkpoint_dir=job.checkpoint_dir,
            cancel=job.cancel,
            on_progress=self._on_progress,
        )
        outcome: dict[str, Any] = {
            "status": result.status,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "classes": list(result.classes),
            "checkpoint": result.checkpoint_path or "",
            "skipped_images": len(result.dataset.skipped),
            "confusion": [[int(n) for n in row] for row in result.confusion],
        }
        if result.cancelled or job.cancel.is_set():
            outcome["status"] = "cancelled"
            outcome["message"] = (
                f"cancelled after {len(result.history)} epoch(s); {job.model_dir} was not replaced"
                + (f"; the best epoch is in {result.checkpoint_path}" if result.checkpoint_path else "")
            )
            return outcome
        last = result.history[-1].epoch if result.history else 0
        self._publish_event(
            ProgressEvent(
                "export", last, job.config.epochs, eta_s=None, message=f"exporting {job.model_dir}"
            ),
            force=True,
        )
        export_model_dir(result, job.model_dir)
        outcome.update(exported=True, model_dir=str(job.model_dir))
        return outcome

    def _on_progress(self, event: ProgressEvent) -> None:
        """Progress callback of the core (worker thread): keep the newest, publish throttled."""
        force = event.phase in ("load", "epoch", "done") or event.phase != self._last_phase
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
        self._publish(self.progress_pub, json.dumps(data))

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
                f"run {job.number} {status}: best validation accuracy {outcome['best_val_acc']:.3f} at epoch "
                f"{outcome['best_epoch']}; model exported to {job.model_dir}"
            )
        else:
            log.info(f"run {job.number} {status}: {outcome['message']}")
        self._publish(self.status_pub, json.dumps(_finite(outcome)))
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
