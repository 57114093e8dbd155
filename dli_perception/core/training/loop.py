"""Transfer learning for image classification: a torchvision backbone with a new head for N classes.

The DLI workflow on the robot: a few hundred images per class, an ImageNet-pretrained
ResNet-18 whose ``fc`` becomes ``Linear(512, N)``, then training in one of three modes:

* ``head``: the backbone is frozen; its features are computed once (``feature_cache``)
  and only the head is trained on them, which makes an epoch a matter of milliseconds;
* ``finetune``: every layer is trained, the backbone with ``lr * backbone_lr_factor``;
* ``head-then-finetune``: ``head_epochs`` head epochs, then fine-tuning for the rest.

The loop is a handful of plain functions (:func:`load_data`, :func:`train_one_epoch`,
:func:`evaluate`, :func:`train`). :func:`train` adds a stratified seeded validation split,
early stopping on validation accuracy, atomic best/last checkpoints, resume, cancel
between batches (a :class:`threading.Event`) and progress callbacks with an ETA.

Every random choice (initialisation, split, sample order, augmentation) is derived from
``TrainConfig.seed`` and the epoch number, so a CPU run is reproducible and a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.training.backbones import WeightsInfo, build_model
from dli_perception.core.training.checkpoints import (
    _Best,
    _checkpoint_dict,
    _Checkpoints,
    _restore,
    load_training_checkpoint,
)
from dli_perception.core.training.config import TrainConfig
from dli_perception.core.training.data import load_data
from dli_perception.core.training.results import (
    EpochStats,
    ProgressCallback,
    ProgressEvent,
    TrainResult,
    per_class_metrics,
)
from dli_perception.core.training.run import _deterministic, _mix, _resolve_device, _Run
from dli_perception.core.training.samples import TrainData
from dli_perception.errors import TrainingCancelledError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def _epoch(
    run: _Run, model: torch.nn.Module, epoch: int, best: _Best, resume_from: Mapping[str, Any] | None
) -> tuple[EpochStats, bool]:
    """Train and validate one epoch (setting up its stage first); returns its stats and whether to stop."""
    config = run.cfg
    stage = run.stage_of(epoch)
    if stage != run.stage:
        run.setup_stage(model, stage, resume_from)
    if run.cached(stage) and run.features is None:
        run.current_epoch = epoch - 1
        run.build_feature_cache(model)
    t0 = time.perf_counter()
    train_loss, train_acc, val = run.run_epoch(model, epoch, best.acc)
    elapsed = time.perf_counter() - t0
    lrs = {g.get("name", ""): g["lr"] for g in run.optimizer.param_groups}
    if run.scheduler is not None:
        run.scheduler.step()
    improved = best.update(val, epoch, model)
    stats = EpochStats(
        epoch,
        stage,
        train_loss,
        train_acc,
        val.loss,
        val.accuracy,
        lrs["head"],
        lrs.get("backbone"),
        elapsed,
        improved,
        run.head.metric_of(float(val.score)),
    )
    logger.info(
        "epoch %d/%d (%s): train loss %.4f, val loss %.4f %s %.4f%s (%.2f s)",
        epoch,
        config.epochs,
        stage,
        train_loss,
        val.loss,
        run.head.metric_name,
        stats.val_metric,
        " *" if improved else "",
        elapsed,
    )
    stop = bool(config.early_stop_patience) and best.bad_epochs >= config.early_stop_patience
    if stop and stage == "head" and config.mode == "head-then-finetune":
        logger.info(
            "no better validation score for %d epochs: the head stage ends, fine-tuning starts", best.bad_epochs
        )
        run.finetune_start, best.bad_epochs, stop = epoch + 1, 0, False
    return stats, stop


def train(
    dataset: str | os.PathLike | TrainData,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    cancel: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    save_last: bool = True,
    run_factory: Callable[..., _Run] | None = None,
) -> TrainResult:
    """Train a classifier on an ImageFolder directory (or already loaded :class:`TrainData`).

    ``checkpoint_dir`` receives ``best.pt`` (written atomically whenever validation accuracy
    improves; ties broken by lower validation loss) and, with ``save_last``, ``last.pt`` after
    every epoch; epochs on cached head features take milliseconds, so their checkpoints are
    written when the head stage (or the run) ends. ``early_stop_patience`` counts epochs without
    higher validation accuracy. ``resume`` continues from such a checkpoint (same classes and
    backbone; the given ``config`` is used): the next epoch is the checkpoint's epoch + 1 and, on
    the CPU, the run ends exactly as the uninterrupted run would have. Setting ``cancel`` stops
    between two batches and returns a result with ``status="cancelled"`` holding the best completed
    epoch (checkpoints of completed epochs only; a cancel while the dataset is read raises
    :class:`TrainingCancelledError`). ``on_progress`` receives :class:`ProgressEvent`\\ s; its
    exceptions are logged once and otherwise ignored. ``run_factory`` builds the per-run state
    (``_Run(data, config, cancel, on_progress)``); :mod:`dli_perception.core.distributed` passes
    a data-parallel one.

    Raises :class:`DatasetError` (bad dataset), :class:`WeightsNotFoundError`,
    :class:`ConfigError` and :class:`TrainingError` (unusable checkpoint, diverging loss).
    """
    import torch

    config = config or TrainConfig()
    t_start = time.perf_counter()
    cancel = cancel or threading.Event()
    checkpoints = _Checkpoints(checkpoint_dir, save_last)
    if on_progress is not None:
        with contextlib.suppress(Exception):
            on_progress(ProgressEvent("load", 0, config.epochs, message="reading the dataset"))
    data = dataset if isinstance(dataset, TrainData) else load_data(dataset, config, cancel=cancel)
    t_loaded = time.perf_counter()
    resume_from = load_training_checkpoint(resume) if resume is not None else None

    device = _resolve_device(config.device)
    with _deterministic(config.deterministic and device.type == "cpu"):
        run = (run_factory or _Run)(data, config, cancel, on_progress)
        run.timings["load_s"] = t_loaded - t_start
        torch.manual_seed(_mix(config.seed, 0))
        if resume_from is None:
            model, weights = build_model(
                config.backbone,
                num_classes=len(data.classes),  # output names: classes, labels or x, y
                weights=config.weights,
                download=config.download_weights,
            )
            history, best, epoch = [], _Best(), 1
        else:
            model, weights, history, best, epoch = _restore(resume_from, data, config, resume, run)
        model.to(run.device)
        status = "completed"
        try:
            while epoch <= config.epochs:
                stats, stop = _epoch(run, model, epoch, best, resume_from)
                resume_from = None  # optimiser state is restored only into the stage it was saved in
                history.append(stats)
                defer = run.cached(stats.stage)  # flushed when the stage ends
                ends_stage = stop or epoch == config.epochs or run.stage_of(epoch + 1) != stats.stage
                checkpoints.add(
                    _checkpoint_dict(run, model, weights, best, history, epoch, stop=stop, snapshot=defer),
                    stats.improved,
                    defer=defer and not ends_stage,
                )
                run.emit(
                    run.event(
                        "epoch",
                        epoch,
                        loss=stats.train_loss,
                        running=stats.train_acc,
                        eta_s=run.eta.estimate(run.remaining(epoch, "done", 0)),
                        stage=stats.stage,
                        val_loss=stats.val_loss,
                        val_score=run.head.metric_of(stats.val_metric),
                        best=best.acc,
                        message="improved" if stats.improved else "",
                    )
                )
                if stop:
                    logger.info(
                        "early stop: no better validation %s for %d epochs (best %.3f at epoch %d)",
                        run.head.metric_name,
                        best.bad_epochs,
                        run.head.metric_of(best.acc),
                        best.epoch,
                    )
                    status = "early_stopped"
                    break
                epoch += 1
        except TrainingCancelledError as exc:
            logger.info("%s; keeping the best epoch so far (%s)", exc, best.epoch or "none")
            status = "cancelled"
        finally:
            checkpoints.flush()  # deferred checkpoints are of completed epochs only
    return _finish(run, model, weights, history, best, status, checkpoints, t_start)


def _finish(
    run: _Run,
    model: torch.nn.Module,
    weights: WeightsInfo,
    history: list[EpochStats],
    best: _Best,
    status: str,
    checkpoints: _Checkpoints,
    t_start: float,
) -> TrainResult:
    """Best weights into the model (CPU, eval mode), timings, the result and the final event."""
    import torch

    if best.state is not None:
        model.load_state_dict(best.state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.to("cpu").eval()
    run.features = None
    timings = run.timings
    if run.device.type == "cuda":
        timings["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated(run.device))
        torch.cuda.empty_cache()
    epoch_times: dict[str, list[float]] = {}
    for h in history:
        epoch_times.setdefault(h.stage, []).append(h.time_s)
    timings["epoch_s"] = epoch_times
    timings["epoch_mean_s"] = {k: float(np.mean(v)) for k, v in epoch_times.items()}
    timings["checkpoint_s"] = checkpoints.seconds
    timings["total_s"] = time.perf_counter() - t_start
    best_path = checkpoints.best_path
    classes = list(run.data.classes)
    classification = run.task == tasks.CLASSIFICATION
    result = TrainResult(
        model=model,
        classes=classes,
        config=run.cfg,
        weights=weights,
        history=history,
        best_epoch=best.epoch,
        best_val_acc=max(best.acc, 0.0) if classification else 0.0,
        best_val_loss=best.loss if math.isfinite(best.loss) else None,
        confusion=best.confusion,
        per_class=per_class_metrics(best.confusion, classes) if best.confusion else {},
        timings=timings,
        status=status,
        dataset=run.data.summary,
        checkpoint_path=str(best_path) if best_path is not None and best_path.is_file() else None,
        task=run.task,
        metrics=dict(best.metrics),
        thresholds=dict(best.thresholds),
        val_outputs=best.outputs,
        val_targets=best.targets,
    )
    last_epoch = history[-1].epoch if history else 0
    run.emit(run.event("done", last_epoch, eta_s=0.0, best=best.acc if best.epoch else None, message=status))
    return result
