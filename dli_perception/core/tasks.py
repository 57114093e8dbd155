"""Task types: what a dataset's images are labelled with and what a model's outputs mean.

=================  ==================================  ===========================================
task               a dataset image carries             the model outputs
=================  ==================================  ===========================================
``classification`` one class name                      one logit per class (softmax, cross-entropy)
``regression``     a target point ``(x, y)``           ``x`` and ``y`` (linear, MSE or smooth L1)
``multilabel``     a set of label names (may be empty) one logit per label (sigmoid, BCE)
=================  ==================================  ===========================================

XY targets are normalised to [-1, 1]: the image centre is ``(0, 0)``, ``x`` grows to the right and
``y`` downwards, so ``(-1, -1)`` is the top-left corner and ``(1, 1)`` the bottom-right one, whatever
the image size. :func:`pixels_to_xy` and :func:`xy_to_pixels` convert; :func:`jetbot_xy` reads the
road-following file names (``xy_<x>_<y>_<id>.jpg``, pixel coordinates in that image).

Pure Python and numpy: datasets, training, export, backends, nodes and the teach station share it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dli_perception.core.dataset.labels import validate_label
from dli_perception.errors import InvalidLabelError, TargetError

CLASSIFICATION = "classification"
REGRESSION = "regression"
MULTILABEL = "multilabel"
TASKS = (CLASSIFICATION, REGRESSION, MULTILABEL)

XY_NAMES = ("x", "y")
"""The output names of a regression model, in output order."""

TARGET_DIRS = {REGRESSION: "xy", MULTILABEL: "multilabel"}
"""The directory under a dataset's root that holds the images of a regression or multi-label dataset
(a classification dataset keeps one directory per class)."""

DEFAULT_THRESHOLD = 0.5
"""The score at which a multi-label output counts as present, unless the model says otherwise."""

JETBOT_NAME = re.compile(r"^xy_(-?\d{1,6})_(-?\d{1,6})_([^/\\]+)\.(jpe?g|png)$", re.IGNORECASE)


def check_task(task: str) -> str:
    """``task`` when it is one of :data:`TASKS`, else :class:`TargetError` naming the choices."""
    if task not in TASKS:
        raise TargetError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return task


# -- regression targets ---------------------------------------------------------------------------


def validate_xy(x: object, y: object) -> tuple[float, float]:
    """``(x, y)`` as floats, or :class:`TargetError` unless both are finite numbers in [-1, 1]."""
    values = []
    for name, value in (("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TargetError(f"XY target {name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or not -1.0 <= value <= 1.0:
            raise TargetError(
                f"XY target {name}={value!r} is outside [-1, 1] (image centre 0, {name} = ±1 at the image edge)"
            )
        values.append(value)
    return values[0], values[1]


def pixels_to_xy(px: float, py: float, width: int, height: int) -> tuple[float, float]:
    """Pixel coordinates in a ``width`` x ``height`` image -> normalised ``(x, y)`` (checked to lie in [-1, 1])."""
    if width <= 0 or height <= 0:
        raise TargetError(f"image size must be positive, got {width}x{height}")
    return validate_xy(2.0 * (float(px) / width - 0.5), 2.0 * (float(py) / height - 0.5))


def xy_to_pixels(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """Normalised ``(x, y)`` -> pixel coordinates in a ``width`` x ``height`` image (the inverse of
    :func:`pixels_to_xy`)."""
    return (float(x) + 1.0) * width / 2.0, (float(y) + 1.0) * height / 2.0


def jetbot_xy(name: str, width: int, height: int) -> tuple[float, float]:
    """The target of a road-following image named ``xy_<x>_<y>_<id>.jpg`` (pixels in that image).

    Normalised by the image size as the road-following training does: ``x = 2 (px / width - 0.5)``.
    :class:`TargetError` when the name does not parse or the point lies outside the image.
    """
    m = JETBOT_NAME.match(name)
    if m is None:
        raise TargetError(
            f"file name {name!r} is not in the road-following layout xy_<x>_<y>_<id>.jpg "
            "(x and y are whole pixel coordinates)"
        )
    px, py = int(m.group(1)), int(m.group(2))
    if not (0 <= px <= width and 0 <= py <= height):
        raise TargetError(f"file name {name!r} points at pixel ({px}, {py}), outside its {width}x{height} image")
    return pixels_to_xy(px, py, width, height)


# -- multi-label targets --------------------------------------------------------------------------


def validate_label_set(labels: Iterable[object], known: Sequence[str] | None = None) -> tuple[str, ...]:
    """A set of label names, canonical and sorted; each checked like a class name.

    With ``known``, a name outside it is refused (:class:`TargetError` naming the unknown ones and
    the known ones). A string is refused too: pass a list, or parse text with :func:`parse_label_set`.
    """
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise TargetError(f"a label set must be a list of names, got {labels!r}")
    names = set()
    for label in labels:
        try:
            names.add(validate_label(label))  # type: ignore[arg-type]
        except InvalidLabelError as err:
            raise TargetError(f"label set: {err}") from None
    if known is not None:
        unknown = sorted(names - set(known))
        if unknown:
            raise TargetError(f"label set names unknown label(s) {unknown}; the dataset's labels are {sorted(known)}")
    return tuple(sorted(names))


def parse_label_set(text: str | bytes) -> tuple[str, ...]:
    """A label set from text: a JSON list (``["cup", "ball"]``) or comma-separated names (``cup,ball``).

    Empty text (or ``[]``) is the empty set: an image that shows none of the labels.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    if text.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TargetError(f"label set {text[:80]!r} is not a valid JSON list ({exc})") from None
        return validate_label_set(data)
    return validate_label_set([part for part in (p.strip() for p in text.split(",")) if part])


def task_of(entries: Iterable[object]) -> str | None:
    """The one task of dataset entries (anything with a ``task`` attribute); None when there are none.

    :class:`TargetError` when they mix task types: a dataset holds one.
    """
    seen: dict[str, str] = {}
    for entry in entries:
        seen.setdefault(entry.task, getattr(entry, "file", ""))  # type: ignore[attr-defined]
        if len(seen) > 1:
            examples = ", ".join(f"{task} ({file})" for task, file in seen.items())
            raise TargetError(f"the dataset mixes task types: {examples}; keep one task per dataset")
    return next(iter(seen), None)


# -- model outputs --------------------------------------------------------------------------------


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Elementwise logistic function, stable for large magnitudes."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


@dataclass(frozen=True)
class LabelSetPrediction:
    """A multi-label output: every label's score (sigmoid), its threshold, and the labels at or over it."""

    active: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)


def check_thresholds(thresholds: Mapping[str, object], labels: Sequence[str]) -> dict[str, float]:
    """Per-label thresholds for ``labels``: missing ones default to :data:`DEFAULT_THRESHOLD`; each in (0, 1)."""
    unknown = sorted(set(thresholds) - set(labels))
    if unknown:
        raise TargetError(f"thresholds name unknown label(s) {unknown}; the model's labels are {list(labels)}")
    out = {}
    for label in labels:
        value = thresholds.get(label, DEFAULT_THRESHOLD)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
            raise TargetError(f"threshold of label {label!r} must be a number in (0, 1), got {value!r}")
        out[label] = float(value)
    return out


def decode_multilabel(
    logits: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float] | None = None
) -> LabelSetPrediction:
    """One image's multi-label logits -> :class:`LabelSetPrediction` (active labels in output order)."""
    logits = np.asarray(logits).reshape(-1)
    if logits.size != len(labels):
        raise TargetError(f"the model gave {logits.size} outputs for {len(labels)} labels")
    limits = check_thresholds(thresholds or {}, labels)
    scores = sigmoid(logits)
    by_label = {label: float(s) for label, s in zip(labels, scores, strict=True)}
    active = tuple(label for label in labels if by_label[label] >= limits[label])
    return LabelSetPrediction(active, by_label, limits)


def decode_xy(outputs: np.ndarray) -> tuple[float, float]:
    """One image's regression outputs -> ``(x, y)``, as the model predicts them (not clipped)."""
    outputs = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if outputs.size != 2:
        raise TargetError(f"a regression model must give 2 outputs (x, y), got {outputs.size}")
    return float(outputs[0]), float(outputs[1])


def output_names(task: str, labels: Sequence[str]) -> list[str]:
    """The names of a model's outputs in order: class or label names, or ``x, y`` for regression."""
    return list(XY_NAMES) if check_task(task) == REGRESSION else list(labels)
