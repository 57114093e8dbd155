"""What each task trains and measures: the loss, the running score, the validation metrics and the best epoch.

============== ========================= =============================== ==================================
task           targets (per image)       loss                            picks the best epoch by
============== ========================= =============================== ==================================
classification class index (int64)       cross-entropy (class weights)   validation accuracy (higher)
regression     ``(x, y)`` in [-1, 1]     MSE or smooth L1                mean Euclidean error (lower)
multilabel     0/1 per label (float32)   BCE with logits, pos_weight     macro F1 at the tuned thresholds
============== ========================= =============================== ==================================

Every :class:`TaskHead` reports one ``score`` where higher is better (the negated mean error for regression),
so early stopping and the best checkpoint compare one number whatever the task; ``metric`` is the same
number as a person reads it (``mean_error`` in normalised units, ``macro_f1``, ``accuracy``).
Multi-label thresholds are tuned on the validation outputs (best F1 per label; 0.5 when the label has no
positive image there, see :func:`tune_thresholds`). Metric functions are plain numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core import tasks
from dli_perception.errors import ConfigError

if TYPE_CHECKING:
    import torch

REGRESSION_LOSSES = ("mse", "smooth_l1")
TASK_CHOICES = ("auto", *tasks.TASKS)

POS_WEIGHT_RANGE = (0.1, 20.0)
"""Multi-label ``pos_weight`` (negatives / positives of the training split) is clipped to this range, so a
label with one positive in a thousand images does not dominate the loss."""

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
"""Candidate multi-label thresholds (scores) searched for each label's best F1."""


def regression_metrics(pred: np.ndarray, target: np.ndarray, baseline_xy: Sequence[float] | None) -> dict[str, Any]:
    """Mean Euclidean error, per-axis MAE, RMSE (normalised units) and the error of always predicting
    ``baseline_xy`` (the training split's mean target) on the same images."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    target = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    diff = pred - target
    dist = np.sqrt((diff**2).sum(axis=1))
    out: dict[str, Any] = {
        "mean_error": float(dist.mean()) if len(dist) else float("nan"),
        "median_error": float(np.median(dist)) if len(dist) else float("nan"),
        "mae_x": float(np.abs(diff[:, 0]).mean()) if len(dist) else float("nan"),
        "mae_y": float(np.abs(diff[:, 1]).mean()) if len(dist) else float("nan"),
        "rmse": float(np.sqrt((dist**2).mean())) if len(dist) else float("nan"),
        "images": int(len(dist)),
    }
    if baseline_xy is not None and len(dist):
        base = np.sqrt(((target - np.asarray(baseline_xy, dtype=np.float64)) ** 2).sum(axis=1))
        out["baseline_xy"] = [float(v) for v in baseline_xy]
        out["baseline_mean_error"] = float(base.mean())
        out["error_vs_baseline"] = float(dist.mean() / base.mean()) if base.mean() > 0 else None
    return out


def _prf(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, int, int, int]:
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1, tp, fp, fn


def multilabel_metrics(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str], thresholds: dict[str, float]):
    """Per-label precision/recall/F1/support at ``thresholds`` (scores are sigmoid outputs), micro and macro
    F1 and the exact-match ratio (every label right)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, len(labels))
    truth = np.asarray(truth).reshape(-1, len(labels)) > 0.5
    limits = np.asarray([thresholds.get(label, tasks.DEFAULT_THRESHOLD) for label in labels])
    pred = scores >= limits
    per_label: dict[str, dict[str, float]] = {}
    f1s = []
    for j, label in enumerate(labels):
        p, r, f1, _, _, _ = _prf(pred[:, j], truth[:, j])
        per_label[label] = {
            "precision": p,
            "recall": r,
            "f1": f1,
            "support": int(truth[:, j].sum()),
            "threshold": float(limits[j]),
        }
        f1s.append(f1)
    _, _, micro, _, _, _ = _prf(pred.ravel(), truth.ravel())
    return {
        "per_label": per_label,
        "micro_f1": micro,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "exact_match": float(np.mean(np.all(pred == truth, axis=1))) if len(pred) else float("nan"),
        "images": int(len(pred)),
    }


def threshold_curves(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, list]]:
    """Precision, recall and F1 of each label at every threshold of :data:`THRESHOLD_GRID` (for tuning and plots)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, len(labels))
    truth = np.asarray(truth).reshape(-1, len(labels)) > 0.5
    out = {}
    for j, label in enumerate(labels):
        rows = [_prf(scores[:, j] >= t, truth[:, j])[:3] for t in THRESHOLD_GRID]
        out[label] = {
            "threshold": [float(t) for t in THRESHOLD_GRID],
            "precision": [r[0] for r in rows],
            "recall": [r[1] for r in rows],
            "f1": [r[2] for r in rows],
        }
    return out


def tune_thresholds(scores: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Per-label threshold with the best validation F1 (ties: the one nearest 0.5); 0.5 for a label without a
    positive validation image, where F1 says nothing."""
    truth_b = np.asarray(truth).reshape(-1, len(labels)) > 0.5
    curves = threshold_curves(scores, truth, labels)
    out = {}
    for j, label in enumerate(labels):
        if not truth_b[:, j].any():
            out[label] = tasks.DEFAULT_THRESHOLD
            continue
        f1 = np.asarray(curves[label]["f1"])
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        pick = best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]
        out[label] = float(THRESHOLD_GRID[pick])
    return out


@dataclass
class TaskHead:
    """The task-specific part of a run: targets, loss, running score and validation metrics.

    ``names`` are the output names (classes, labels or ``x, y``); ``train_targets`` the training split's
    targets (class indices, ``(n, 2)`` XY or ``(n, L)`` 0/1), used for class weights, ``pos_weight`` and the
    mean-target baseline.
    """

    task: str
    names: list[str]
    train_targets: np.ndarray
    class_balance: str = "loss"
    loss: str = "mse"

    def __post_init__(self) -> None:
        tasks.check_task(self.task)
        if self.loss not in REGRESSION_LOSSES:
            raise ConfigError(f"loss must be one of {REGRESSION_LOSSES}, got {self.loss!r}")
        n = len(self.train_targets)
        self.baseline_xy = None
        if self.task == tasks.REGRESSION:
            self.baseline_xy = (
                [float(v) for v in np.asarray(self.train_targets).reshape(-1, 2).mean(axis=0)] if n else [0, 0]
            )
        self._pos_weight = None
        if self.task == tasks.MULTILABEL:  # fixed by the training split: worked out once, used every batch
            y = np.asarray(self.train_targets, dtype=np.float64).reshape(-1, len(self.names))
            pos = y.sum(axis=0)
            self._pos_weight = np.clip((len(y) - pos) / np.maximum(pos, 1.0), *POS_WEIGHT_RANGE)

    @property
    def metric_name(self) -> str:
        return {tasks.CLASSIFICATION: "accuracy", tasks.REGRESSION: "mean_error", tasks.MULTILABEL: "macro_f1"}[
            self.task
        ]

    def metric_of(self, score: float) -> float:
        """The readable metric of an internal score (higher is better): mean error = -score for regression."""
        return -score if self.task == tasks.REGRESSION else score

    def criterion(self, device: torch.device) -> torch.nn.Module:
        import torch

        if self.task == tasks.CLASSIFICATION:
            counts = np.bincount(self.train_targets.astype(np.int64), minlength=len(self.names)).astype(np.float64)
            weight = None
            if self.class_balance == "loss":
                weight = torch.as_tensor(counts.sum() / (len(self.names) * counts), dtype=torch.float32)
            return torch.nn.CrossEntropyLoss(weight=weight).to(device)
        if self.task == tasks.REGRESSION:
            return (torch.nn.MSELoss() if self.loss == "mse" else torch.nn.SmoothL1Loss(beta=0.1)).to(device)
        return torch.nn.BCEWithLogitsLoss(pos_weight=torch.as_tensor(self.pos_weight(), dtype=torch.float32)).to(device)

    def pos_weight(self) -> np.ndarray | None:
        """Negatives / positives of each label in the training split, clipped to :data:`POS_WEIGHT_RANGE`
        (None unless multilabel)."""
        return self._pos_weight

    def batch_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Sum over the batch of the per-image running figure: correct top-1 (classification), Euclidean error
        (regression) or exact label-set matches at 0.5 (multilabel)."""
        import torch

        with torch.no_grad():
            if self.task == tasks.CLASSIFICATION:
                return float((outputs.argmax(dim=1) == targets).sum())
            if self.task == tasks.REGRESSION:
                return float(torch.linalg.vector_norm(outputs.float() - targets.float(), dim=1).sum())
            return float(((outputs > 0) == (targets > 0.5)).all(dim=1).sum())

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Summed validation loss of a regression or multilabel batch (the training loss, positive weights
        included); classification is evaluated by ``steps.evaluate``."""
        import torch.nn.functional as F

        if self.task == tasks.REGRESSION:
            fn = (
                F.mse_loss
                if self.loss == "mse"
                else (lambda a, b, reduction: F.smooth_l1_loss(a, b, reduction=reduction, beta=0.1))
            )
            return float(fn(outputs.float(), targets.float(), reduction="sum")) / 2.0
        import torch

        pw = torch.as_tensor(self.pos_weight(), dtype=torch.float32, device=outputs.device)
        loss = F.binary_cross_entropy_with_logits(outputs.float(), targets.float(), pos_weight=pw, reduction="sum")
        return float(loss) / len(self.names)

    def metrics(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[float, dict[str, Any], dict[str, float]]:
        """``(score, metrics, thresholds)`` of the validation outputs (regression and multilabel)."""
        if self.task == tasks.REGRESSION:
            m = regression_metrics(outputs, targets, self.baseline_xy)
            return -m["mean_error"], m, {}
        scores = tasks.sigmoid(outputs)
        thresholds = tune_thresholds(scores, targets, self.names)
        m = multilabel_metrics(scores, targets, self.names, thresholds)
        m["thresholds"] = thresholds
        m["pos_weight"] = {k: float(v) for k, v in zip(self.names, self.pos_weight(), strict=True)}
        return m["macro_f1"], m, thresholds
