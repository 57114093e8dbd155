"""What a run reports: progress events, per-epoch statistics, validation results and the final result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from dli_perception.core.training.backbones import WeightsInfo
    from dli_perception.core.training.config import TrainConfig
    from dli_perception.core.training.data import DatasetSummary

ProgressCallback = Callable[["ProgressEvent"], None]


@dataclass
class ProgressEvent:
    """One progress report.

    ``phase`` is ``"load"``, ``"features"`` (head-mode feature cache), ``"train"``, ``"val"``,
    ``"epoch"`` (an epoch ended: ``loss``/``accuracy`` are the training values and ``val_*``
    are set) or ``"done"``. ``epoch`` counts from 1 (0 before the first epoch), ``batch``
    from 1; ``loss``/``accuracy`` are running means of the current phase; ``eta_s`` is the
    estimated time to the end of the run in seconds (None until something was timed).
    """

    phase: str
    epoch: int
    epochs: int
    batch: int = 0
    batches: int = 0
    loss: float | None = None
    accuracy: float | None = None
    eta_s: float | None = None
    stage: str = ""
    val_loss: float | None = None
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochStats:
    """History entry of one epoch; ``time_s`` covers training and validation, not checkpoint writes."""

    epoch: int
    stage: str
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    backbone_lr: float | None
    time_s: float
    improved: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """Validation outcome: mean loss, accuracy (0-1), confusion matrix (rows true, columns predicted)."""

    loss: float
    accuracy: float
    confusion: np.ndarray
    count: int


def per_class_metrics(confusion: Any, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = true class).

    A precision or recall whose denominator is zero is reported as 0.0.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(classes):
        tp = float(cm[i, i])
        predicted = float(cm[:, i].sum())
        support = float(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
    return out


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``model`` holds the best epoch's weights, on the CPU, in eval mode.

    ``status`` is ``"completed"``, ``"early_stopped"`` or ``"cancelled"``; ``confusion`` and
    ``per_class`` are of the best epoch's validation; ``timings`` holds seconds: ``load_s``,
    ``features_s`` (feature cache), ``epoch_mean_s`` per stage, ``checkpoint_s``, ``total_s``.
    """

    model: Any
    classes: list[str]
    config: TrainConfig
    weights: WeightsInfo
    history: list[EpochStats]
    best_epoch: int
    best_val_acc: float
    best_val_loss: float | None
    confusion: list[list[int]]
    per_class: dict[str, dict[str, float]]
    timings: dict[str, Any]
    status: str
    dataset: DatasetSummary
    checkpoint_path: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def backbone(self) -> str:
        return self.config.backbone

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.config.preprocess

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (everything but the model): for metadata, logs and the node."""
        return {
            "status": self.status,
            "classes": list(self.classes),
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "best_val_loss": self.best_val_loss,
            "epochs_run": len(self.history),
            "confusion": self.confusion,
            "per_class": self.per_class,
            "history": [h.to_dict() for h in self.history],
            "timings": self.timings,
            "weights": self.weights.to_dict(),
            "dataset": self.dataset.to_dict(),
            "config": self.config.to_dict(),
            "checkpoint_path": self.checkpoint_path,
        }
