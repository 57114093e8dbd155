"""What a run reports: progress events, per-epoch statistics, validation results and the final result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core.contracts import TrainProgress
from dli_perception.core.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from dli_perception.core.training.backbones import WeightsInfo
    from dli_perception.core.training.config import TrainConfig
    from dli_perception.core.training.samples import DatasetSummary

ProgressCallback = Callable[["ProgressEvent"], None]


# The core's progress event is the trainer's published contract itself: one definition of its fields,
# its meaning and its checks (dli_perception.core.contracts.TrainProgress).
ProgressEvent = TrainProgress


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
    val_metric: float | None = None
    """The task's validation metric (accuracy, mean error or macro F1; see :class:`ProgressEvent`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """Validation outcome: mean loss, accuracy (0-1), confusion matrix (rows true, columns predicted)."""

    loss: float
    accuracy: float
    confusion: np.ndarray
    count: int
    score: float | None = None
    """Higher is better: accuracy, the negated mean error (regression) or macro F1 (multilabel)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Regression/multilabel metrics (see :mod:`.targets`)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    outputs: np.ndarray | None = None
    """Raw validation outputs ``(n, C)`` and their ``targets`` (regression, multilabel), for the report."""
    targets: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.score is None:
            self.score = self.accuracy


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
    task: str = "classification"
    metrics: dict[str, Any] = field(default_factory=dict)
    """The best epoch's validation metrics of a regression/multilabel run (see :mod:`.targets`)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Multilabel: per-label thresholds tuned on the validation split at the best epoch."""
    val_outputs: Any = None
    """The best epoch's raw validation outputs and targets (regression/multilabel; for the report)."""
    val_targets: Any = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def headline(self) -> str:
        """The best epoch's validation figure in words, e.g. ``validation accuracy 93.2%`` or
        ``validation mean XY error 0.081 (mean-target baseline 0.412)``."""
        m = self.metrics
        if self.task == "regression" and m.get("mean_error") is not None:
            base = m.get("baseline_mean_error")
            return f"validation mean XY error {m['mean_error']:.3f}" + (
                f" (mean-target baseline {base:.3f})" if base is not None else ""
            )
        if self.task == "multilabel" and m.get("macro_f1") is not None:
            return (
                f"validation macro F1 {m['macro_f1']:.3f}, micro F1 {m.get('micro_f1', 0.0):.3f}, "
                f"exact match {100 * m.get('exact_match', 0.0):.1f}%"
            )
        return f"validation accuracy {100 * self.best_val_acc:.1f}%"

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
            "task": self.task,
            "metrics": self.metrics,
            "thresholds": self.thresholds,
        }
