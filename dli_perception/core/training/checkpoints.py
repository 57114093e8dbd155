"""Training checkpoints: ``best.pt`` and ``last.pt`` written atomically, read back, resumed from.

A checkpoint is one dict (model, optimiser, scheduler, epoch, config, classes, history, best epoch) saved
to a temporary file and moved into place, so an interrupted write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dli_perception.core import fsutil, tasks
from dli_perception.core.training.backbones import WeightsInfo, backbone_spec, build_model
from dli_perception.core.training.config import TrainConfig
from dli_perception.core.training.results import EpochStats, EvalResult, TrainResult, per_class_metrics
from dli_perception.core.training.samples import DatasetSummary, TrainData
from dli_perception.errors import TrainingError

if TYPE_CHECKING:
    import torch

    from dli_perception.core.training.run import _Run

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dli_perception.train_checkpoint"
CHECKPOINT_VERSION = 1
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"


def save_checkpoint(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> None:
    """Write a checkpoint dict atomically (temp file + ``os.replace``): the old file survives a crash."""
    import torch

    with fsutil.atomic_open(path) as f:
        torch.save(dict(checkpoint), f)


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint (``best.pt``, ``last.pt``) with ``weights_only=True``; check its format."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainingError(f"checkpoint {path} does not exist; pass the best.pt or last.pt of an earlier run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a dli_perception training checkpoint (best.pt or last.pt)")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"{path} has checkpoint format version {ckpt.get('format_version')}, this version reads "
            f"{CHECKPOINT_VERSION}; train again"
        )
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> torch.nn.Module:
    """Rebuild the model of a training checkpoint (CPU, eval mode)."""
    model, _ = build_model(ckpt["backbone"], num_classes=len(ckpt["classes"]), weights="none")
    model.load_state_dict(ckpt["model"])
    return model.eval()


def result_from_checkpoint(path: str | os.PathLike) -> TrainResult:
    """A :class:`TrainResult` rebuilt from a training checkpoint (e.g. ``best.pt``), ready to export."""
    ckpt = load_training_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    weights = WeightsInfo(**ckpt["weights"])
    history = [EpochStats(**h) for h in ckpt["history"]]
    dataset = DatasetSummary(**{k: v for k, v in ckpt["dataset"].items() if k not in ("num_images", "num_skipped")})
    confusion = ckpt.get("best_confusion") or []
    task = str(ckpt.get("task", tasks.CLASSIFICATION))
    return TrainResult(
        model=model_from_checkpoint(ckpt),
        classes=list(ckpt["classes"]),
        config=config,
        weights=weights,
        history=history,
        best_epoch=int(ckpt["best_epoch"]),
        best_val_acc=max(float(ckpt["best_val_acc"]), 0.0) if task == tasks.CLASSIFICATION else 0.0,
        best_val_loss=float(ckpt["best_val_loss"]) if math.isfinite(ckpt["best_val_loss"]) else None,
        confusion=confusion,
        per_class=per_class_metrics(confusion, ckpt["classes"]) if confusion else {},
        timings=dict(ckpt.get("timings", {})),
        status=str(ckpt.get("status", "completed")),
        dataset=dataset,
        checkpoint_path=str(Path(path).resolve()),
        task=task,
        metrics=dict(ckpt.get("best_metrics") or {}),
        thresholds=dict(ckpt.get("best_thresholds") or {}),
        val_outputs=ckpt.get("best_val_outputs"),
        val_targets=ckpt.get("best_val_targets"),
    )


def _copy_if(state: dict[str, Any], copy: bool) -> dict[str, Any]:
    import copy as _copy

    return _copy.deepcopy(state) if copy else state


def _link_or_save(src: Path, dest: Path, checkpoint: Mapping[str, Any]) -> None:
    """Make ``dest`` a hard link of the just-written ``src`` atomically; write it in full where links fail."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(src, tmp)
        os.replace(tmp, dest)
        fsutil.fsync_dir(dest.parent)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        save_checkpoint(dest, checkpoint)


def _state_to_cpu(model: torch.nn.Module) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class _Best:
    """The best epoch so far. Patience counts epochs without higher accuracy; equal accuracy with a
    lower loss still makes a new best (small validation sets tie often)."""

    acc: float = -math.inf
    """The best validation score (higher is better: accuracy, -mean error, macro F1; see :mod:`.targets`)."""
    loss: float = math.inf
    epoch: int = 0
    bad_epochs: int = 0
    state: dict[str, Any] | None = None
    confusion: list[list[int]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    outputs: list | None = None
    targets: list | None = None

    def update(self, val: EvalResult, epoch: int, model: torch.nn.Module) -> bool:
        score = float(val.score if val.score is not None else val.accuracy)
        self.bad_epochs = 0 if score > self.acc else self.bad_epochs + 1
        improved = score > self.acc or (score == self.acc and val.loss < self.loss)
        if improved:
            self.acc, self.loss, self.epoch = score, val.loss, epoch
            self.state = _state_to_cpu(model)
            self.confusion = val.confusion.tolist()
            self.metrics, self.thresholds = dict(val.metrics), dict(val.thresholds)
            self.outputs = val.outputs.tolist() if val.outputs is not None else None
            self.targets = val.targets.tolist() if val.targets is not None else None
        return improved


class _Checkpoints:
    """``best.pt`` and ``last.pt`` of one run. A write may be deferred (kept in memory) and flushed later."""

    def __init__(self, directory: str | os.PathLike | None, save_last: bool) -> None:
        self.dir = Path(directory).expanduser() if directory is not None else None
        self.save_last = save_last
        self.pending: dict[str, dict[str, Any]] = {}
        self.seconds = 0.0
        if self.dir is not None:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrainingError(f"cannot create checkpoint directory {self.dir}: {exc}") from exc

    @property
    def best_path(self) -> Path | None:
        return self.dir / BEST_CHECKPOINT if self.dir is not None else None

    def add(self, checkpoint: dict[str, Any], improved: bool, *, defer: bool) -> None:
        if self.dir is None:
            return
        if improved:
            self.pending[BEST_CHECKPOINT] = checkpoint
        if self.save_last:
            self.pending[LAST_CHECKPOINT] = checkpoint
        if not defer:
            self.flush()

    def flush(self) -> None:
        if self.dir is None or not self.pending:
            return
        t0 = time.perf_counter()
        last, best = self.pending.get(LAST_CHECKPOINT), self.pending.get(BEST_CHECKPOINT)
        if last is not None:
            save_checkpoint(self.dir / LAST_CHECKPOINT, last)
        if best is not None and best is last:
            _link_or_save(self.dir / LAST_CHECKPOINT, self.dir / BEST_CHECKPOINT, best)
        elif best is not None:
            save_checkpoint(self.dir / BEST_CHECKPOINT, best)
        self.pending.clear()
        self.seconds += time.perf_counter() - t0


def _checkpoint_dict(
    run: _Run,
    model: torch.nn.Module,
    weights: WeightsInfo,
    best: _Best,
    history: Sequence[EpochStats],
    epoch: int,
    *,
    stop: bool,
    snapshot: bool,
) -> dict[str, Any]:
    """Everything needed to resume after ``epoch``. ``snapshot``: copy what later epochs change (the
    head and the optimiser; the frozen backbone is shared), for a checkpoint written later."""
    config = run.cfg
    state = model.state_dict()
    if snapshot:
        prefix = backbone_spec(config.backbone).head + "."
        state = {k: v.detach().clone() if k.startswith(prefix) else v for k, v in state.items()}
    scheduler = run.scheduler.state_dict() if run.scheduler is not None else None
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model": state,
        "optimizer": _copy_if(run.optimizer.state_dict(), snapshot),
        "scheduler": _copy_if(scheduler, snapshot) if scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": epoch,
        "stage": run.stage,
        "finetune_start": run.finetune_start,
        "config": config.to_dict(),
        "classes": list(run.data.classes),
        "backbone": config.backbone,
        "preprocess": config.preprocess.to_dict(),
        "best_val_acc": best.acc,
        "best_val_loss": best.loss,
        "best_epoch": best.epoch,
        "bad_epochs": best.bad_epochs,
        "best_confusion": best.confusion,
        "task": run.task,
        "best_metrics": best.metrics,
        "best_thresholds": best.thresholds,
        "best_val_outputs": best.outputs,
        "best_val_targets": best.targets,
        "history": [h.to_dict() for h in history],
        "weights": weights.to_dict(),
        "dataset": run.data.summary.to_dict(),
        "status": "early_stopped" if stop else "completed",
    }


def _restore(
    ckpt: Mapping[str, Any], data: TrainData, config: TrainConfig, resume: Any, run: _Run
) -> tuple[torch.nn.Module, WeightsInfo, list[EpochStats], _Best, int]:
    """Model, history, best-epoch state and next epoch from a training checkpoint, checked against the run."""
    if ckpt.get("task", tasks.CLASSIFICATION) != data.task:
        raise TrainingError(
            f"checkpoint {resume} was trained for task {ckpt.get('task', tasks.CLASSIFICATION)} but the dataset is "
            f"{data.task}; resume needs the same task (start a new run instead)"
        )
    if list(ckpt["classes"]) != list(data.classes):
        raise TrainingError(
            f"checkpoint {resume} was trained on classes {ckpt['classes']} but the dataset has "
            f"{data.classes}; resume needs the same classes (start a new run instead)"
        )
    if ckpt["backbone"] != config.backbone:
        raise TrainingError(f"checkpoint {resume} is a {ckpt['backbone']} but the config asks for {config.backbone}")
    if ckpt["dataset"].get("sha256") != data.summary.sha256:
        logger.warning("the dataset changed since checkpoint %s was written; resuming anyway", resume)
    old = ckpt["config"]
    changed = sorted(k for k, v in config.to_dict().items() if k in old and old[k] != v)
    if changed:
        logger.warning("resuming %s with changed options %s: results differ from an uninterrupted run", resume, changed)
    model, _ = build_model(config.backbone, num_classes=len(data.classes), weights="none")
    model.load_state_dict(ckpt["model"])
    run.finetune_start = int(ckpt["finetune_start"])
    best = _Best(
        acc=float(ckpt["best_val_acc"]),
        loss=float(ckpt["best_val_loss"]),
        epoch=int(ckpt["best_epoch"]),
        bad_epochs=int(ckpt["bad_epochs"]),
        confusion=ckpt["best_confusion"],
        metrics=dict(ckpt.get("best_metrics") or {}),
        thresholds=dict(ckpt.get("best_thresholds") or {}),
        outputs=ckpt.get("best_val_outputs"),
        targets=ckpt.get("best_val_targets"),
    )
    if best.epoch == ckpt["epoch"]:
        best.state = {k: v.clone() for k, v in ckpt["model"].items()}
    elif best.epoch:
        with contextlib.suppress(TrainingError):
            beside = load_training_checkpoint(Path(resume).parent / BEST_CHECKPOINT)
            if beside["epoch"] == best.epoch:
                best.state = beside["model"]
        if best.state is None:
            logger.warning(
                "best weights (epoch %d) not found beside %s; the result keeps the last weights unless a "
                "later epoch improves",
                best.epoch,
                resume,
            )
    logger.info("resuming from %s after epoch %d", resume, ckpt["epoch"])
    history = [EpochStats(**h) for h in ckpt["history"]]
    return model, WeightsInfo(**ckpt["weights"]), history, best, int(ckpt["epoch"]) + 1
