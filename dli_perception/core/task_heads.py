"""What a live classifier does with one frame's raw outputs for regression and multi-label models.

Classification goes through :class:`~dli_perception.core.decision.DecisionFilter`; the other two
tasks of :mod:`dli_perception.core.tasks` have a small stateful "head" each, made per served
model by :func:`make_head`:

* :class:`RegressionHead`: the two outputs are the target point ``(x, y)`` (normalised, centre 0,
  x right, y down; as the model predicts it, not clipped), smoothed over frames by
  :class:`XYFilter`, an exponential moving average whose ``alpha`` is the weight of the newest
  frame (1 = no smoothing; the first frame after a reset is taken as it is);
* :class:`MultilabelHead`: one logit per label -> sigmoid scores; a label is active when its
  score is at or over its threshold: the model's own (``metadata.json`` ``thresholds``, 0.5 when
  absent), replaced per label by :attr:`TaskConfig.label_thresholds` (the node's
  ``label_thresholds`` parameter, text ``"cup=0.4,ball=0.6"`` read by :func:`parse_label_thresholds`).

Outputs that are not finite numbers raise :class:`~dli_perception.errors.ModelError` and leave the
head's state as it was. Pure numpy; one head per stream, not thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dli_perception.core import tasks
from dli_perception.errors import ConfigError, ModelError, TargetError


def parse_label_thresholds(text: str) -> dict[str, float]:
    """``"cup=0.4, ball=0.6"`` -> ``{"cup": 0.4, "ball": 0.6}``; ``""`` -> ``{}``.

    :class:`ConfigError` naming the entry (and its label) that is not ``label=number`` with the
    number in (0, 1), or a label given twice.
    """
    if not isinstance(text, str):
        raise ConfigError(f"label_thresholds must be text like 'cup=0.4,ball=0.6', got {text!r}")
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        label, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not label:
            raise ConfigError(f"label_thresholds entry {part!r} is not label=threshold (e.g. 'cup=0.4,ball=0.6')")
        try:
            threshold = float(value)
        except ValueError:
            raise ConfigError(
                f"label_thresholds: the threshold of label {label!r} must be a number in (0, 1), got {value!r}"
            ) from None
        if not (math.isfinite(threshold) and 0.0 < threshold < 1.0):
            raise ConfigError(
                f"label_thresholds: the threshold of label {label!r} must lie in (0, 1) (exclusive), got {value!r}"
            )
        if label in out:
            raise ConfigError(f"label_thresholds names label {label!r} twice")
        out[label] = threshold
    return out


def check_xy_ema_alpha(alpha: object) -> float:
    """``alpha`` as a float when it is a number in (0, 1], else :class:`ConfigError`."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) <= 1.0:
        raise ConfigError(f"xy_ema_alpha must be a number in (0, 1] (1 = no smoothing), got {alpha!r}")
    return float(alpha)


@dataclass(frozen=True)
class TaskConfig:
    """Serving settings of the regression and multi-label tasks (checked when made).

    ``xy_ema_alpha`` in (0, 1]: weight of the newest frame in the XY moving average;
    ``label_thresholds``: per-label thresholds in (0, 1) replacing the model's.
    """

    xy_ema_alpha: float = 1.0
    label_thresholds: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_xy_ema_alpha(self.xy_ema_alpha)
        for label, value in self.label_thresholds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                raise ConfigError(
                    f"label_thresholds: the threshold of label {label!r} must lie in (0, 1), got {value!r}"
                )

    @classmethod
    def from_params(cls, xy_ema_alpha: float, label_thresholds: str) -> TaskConfig:
        """From the node's parameter values (``label_thresholds`` as text)."""
        return cls(float(xy_ema_alpha), parse_label_thresholds(label_thresholds))


class XYFilter:
    """Exponential moving average of a point: ``s = alpha * new + (1 - alpha) * s``; the first point as it is."""

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = check_xy_ema_alpha(alpha)
        self.point: tuple[float, float] | None = None

    def reset(self) -> None:
        self.point = None

    def update(self, x: float, y: float) -> tuple[float, float]:
        """Take one frame's point; returns the smoothed point."""
        if self.point is None:
            self.point = (float(x), float(y))
        else:
            a = self.alpha
            px, py = self.point
            self.point = (a * x + (1.0 - a) * px, a * y + (1.0 - a) * py)
        return self.point


def _finite(outputs: np.ndarray, task: str) -> np.ndarray:
    values = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ModelError(f"the {task} model gave outputs that are not finite numbers: {values.tolist()}")
    return values


@dataclass(frozen=True)
class XYEstimate:
    """One frame's target point: smoothed (``x``, ``y``) and as the model gave it (``raw_x``, ``raw_y``)."""

    x: float
    y: float
    raw_x: float
    raw_y: float


class RegressionHead:
    """A regression model's two outputs -> :class:`XYEstimate`, EMA-smoothed."""

    task = tasks.REGRESSION

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.filter = XYFilter(config.xy_ema_alpha)
        self.notes: list[str] = []

    def update(self, outputs: np.ndarray) -> XYEstimate:
        raw_x, raw_y = tasks.decode_xy(_finite(outputs, self.task))
        x, y = self.filter.update(raw_x, raw_y)
        return XYEstimate(x, y, raw_x, raw_y)


@dataclass(frozen=True)
class LabelSetEstimate:
    """One frame's active labels (output order), every label's score and threshold, and whether the set changed."""

    active: tuple[str, ...]
    scores: dict[str, float]
    thresholds: dict[str, float]
    changed: bool


class MultilabelHead:
    """A multi-label model's logits -> :class:`LabelSetEstimate`, with the model's thresholds and the overrides.

    Overrides naming labels the model lacks are left out and described in :attr:`notes`.
    """

    task = tasks.MULTILABEL

    def __init__(self, config: TaskConfig, labels: Sequence[str], model_thresholds: Mapping[str, float]) -> None:
        self.config = config
        self.labels = list(labels)
        unknown = sorted(set(config.label_thresholds) - set(self.labels))
        self.notes = (
            [f"label_thresholds name label(s) {unknown} this model lacks (its labels: {self.labels}); ignored"]
            if unknown
            else []
        )
        merged = {**model_thresholds, **{k: v for k, v in config.label_thresholds.items() if k in self.labels}}
        try:
            self.thresholds = tasks.check_thresholds(merged, self.labels)
        except TargetError as exc:
            raise ConfigError(str(exc)) from None
        self._active: tuple[str, ...] | None = None

    def update(self, outputs: np.ndarray) -> LabelSetEstimate:
        try:
            prediction = tasks.decode_multilabel(_finite(outputs, self.task), self.labels, self.thresholds)
        except TargetError as exc:
            raise ModelError(str(exc)) from None
        changed = prediction.active != self._active
        self._active = prediction.active
        return LabelSetEstimate(prediction.active, prediction.scores, prediction.thresholds, changed)


def make_head(
    task: str, config: TaskConfig, labels: Sequence[str], model_thresholds: Mapping[str, float]
) -> RegressionHead | MultilabelHead | None:
    """The head for a model of ``task`` (None for classification, which the decision filter serves)."""
    if task == tasks.REGRESSION:
        return RegressionHead(config)
    if task == tasks.MULTILABEL:
        return MultilabelHead(config, labels, model_thresholds)
    tasks.check_task(task)
    return None
