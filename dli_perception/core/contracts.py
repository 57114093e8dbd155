"""The typed results the nodes publish, with the one encoding of each (JSON in std_msgs/String).

Every result the package's nodes send as text has a dataclass here with ``encode() -> str`` and
``decode(text) -> instance``. ``decode`` accepts exactly what the nodes emit (extra keys are kept
out of the way, not refused, so a newer node can add a field) and raises
:class:`~dli_perception.errors.BadMessageError` saying which field is wrong.

==================  ===============================  =====================================
result              topic (relative to the node)     publisher
==================  ===============================  =====================================
:class:`Counts`     ``recorder_node/counts``         recorder_node, latched
:class:`TrainProgress`  ``trainer_node/progress``    trainer_node
:class:`TrainStatus`    ``trainer_node/status``      trainer_node, latched
:class:`Scores`     ``classifier_node/scores``       classifier_node, one per frame
:class:`Label`      ``label``                        classifier_node (plain name), one per frame
:class:`ClassList`  ``classifier_node/classes``      classifier_node, latched
:class:`XYResult`   ``classifier_node/xy_result``    classifier_node (regression), one per frame
:class:`LabelSet`   ``classifier_node/label_set``    classifier_node (multilabel), one per frame
:class:`ReactionState`  ``reaction_node/state``      reaction_node, latched
==================  ===============================  =====================================

A result made from one camera image carries that image's header (``stamp`` ``{sec, nanosec}`` and
``frame_id``): :class:`Scores`, :class:`XYResult` and :class:`LabelSet` always, :class:`ReactionState` when its label came with scores.
Counts, training progress and status and the class list are about many images and carry none.

The classifier's results live in :mod:`dli_perception.core.frame_results` and the JSON field readers in
:mod:`dli_perception.core.contract_fields`; import every result from here.

No rclpy here: the module serves nodes, the CLI, the teach station and tests alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dli_perception.core.contract_fields import (
    _bool,
    _choice,
    _dumps,
    _finite_or_none,
    _float_map,
    _int,
    _num,
    _object,
    _stamp_from_json,
    _stamp_to_json,
    _str,
    stamp_ns_of,
)
from dli_perception.core.frame_results import ClassList, Label, LabelSet, Scores, XYResult
from dli_perception.errors import BadMessageError

__all__ = [
    "CONTRACTS",
    "TOTAL_KEY",
    "TRAIN_OUTCOMES",
    "TRAIN_PHASES",
    "ClassList",
    "Counts",
    "Label",
    "LabelSet",
    "ReactionState",
    "Scores",
    "TrainProgress",
    "TrainStatus",
    "XYResult",
    "field_names",
    "stamp_ns_of",
]

TOTAL_KEY = "_total"
"""The key of the total in :class:`Counts` JSON; a class of that name cannot be told from it."""

TRAIN_PHASES = ("load", "features", "train", "val", "epoch", "export", "done")
TRAIN_OUTCOMES = ("completed", "early_stopped", "cancelled", "failed")


# -- recorder -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Images per class in the recorder's dataset (``{"class": n, ..., "_total": n}``)."""

    per_class: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.per_class.values())

    def encode(self) -> str:
        return _dumps({**self.per_class, TOTAL_KEY: self.total})

    @classmethod
    def decode(cls, text: str | bytes) -> Counts:
        what = "recorder counts"
        data = _object(text, what)
        per_class: dict[str, int] = {}
        for name, n in data.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise BadMessageError(f"{what}: count of {name!r} must be a whole number >= 0, got {n!r}")
            if name != TOTAL_KEY:
                per_class[name] = n
        if TOTAL_KEY in data and data[TOTAL_KEY] != sum(per_class.values()):
            raise BadMessageError(f"{what}: {TOTAL_KEY}={data[TOTAL_KEY]} is not the sum of the classes")
        return cls(per_class)


# -- trainer --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainProgress:
    """One progress event of a training run: what the core's training reports (``ProgressEvent`` is this
    class) and what ``trainer_node/progress`` carries. Units: seconds, 0-1 accuracy.

    ``phase`` is one of :data:`TRAIN_PHASES`: ``"load"``, ``"features"`` (head-mode feature cache),
    ``"train"``, ``"val"``, ``"epoch"`` (an epoch ended: ``loss``/``accuracy`` are the training values
    and ``val_*`` are set), ``"export"`` or ``"done"``. ``epoch`` counts from 1 (0 before the first
    epoch), ``batch`` from 1; ``loss``/``accuracy`` are running means of the current phase; ``eta_s`` is
    the estimated time to the end of the run in seconds (None until something was timed).

    ``task`` and ``metric_name`` say what ``metric``/``val_metric``/``best_val_metric`` hold:
    ``accuracy`` (classification), ``mean_error`` (regression: mean Euclidean error in normalised
    units, lower is better; ``accuracy`` fields stay None) or ``macro_f1`` (multilabel, at the tuned
    thresholds; ``accuracy`` is then the running exact-match ratio at 0.5).
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
    task: str = "classification"
    metric_name: str = "accuracy"
    metric: float | None = None
    val_metric: float | None = None
    best_val_metric: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the run done, 0-1 (epochs done plus the current epoch's batches)."""
        if self.phase == "done":
            return 1.0
        if self.epochs <= 0:
            return 0.0
        done = self.epoch if self.phase in ("epoch", "export") else max(0, self.epoch - 1)
        if self.phase in ("train", "val") and self.batches:
            done += min(1.0, self.batch / self.batches) * (0.9 if self.phase == "train" else 1.0)
        return max(0.0, min(1.0, done / self.epochs))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> str:
        return _dumps({k: _finite_or_none(v) for k, v in asdict(self).items()})

    @classmethod
    def decode(cls, text: str | bytes) -> TrainProgress:
        return cls.from_dict(_object(text, "training progress"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainProgress:
        """The event from its dict form (:meth:`to_dict`), checked like :meth:`decode`."""
        what = "training progress"
        return cls(
            phase=_choice(data, "phase", what, TRAIN_PHASES),
            epoch=_int(data, "epoch", what),
            epochs=_int(data, "epochs", what),
            batch=_int(data, "batch", what, optional=True, default=0),
            batches=_int(data, "batches", what, optional=True, default=0),
            loss=_num(data, "loss", what, optional=True),
            accuracy=_num(data, "accuracy", what, optional=True),
            eta_s=_num(data, "eta_s", what, optional=True),
            stage=_str(data, "stage", what, ""),
            val_loss=_num(data, "val_loss", what, optional=True),
            val_accuracy=_num(data, "val_accuracy", what, optional=True),
            best_val_accuracy=_num(data, "best_val_accuracy", what, optional=True),
            message=_str(data, "message", what, ""),
            task=_str(data, "task", what, "classification"),
            metric_name=_str(data, "metric_name", what, "accuracy"),
            metric=_num(data, "metric", what, optional=True),
            val_metric=_num(data, "val_metric", what, optional=True),
            best_val_metric=_num(data, "best_val_metric", what, optional=True),
        )


@dataclass(frozen=True)
class TrainStatus:
    """The outcome of a training run (latched on ``trainer_node/status``).

    ``status`` is one of :data:`TRAIN_OUTCOMES`; ``exported`` says whether ``model_dir`` was replaced;
    ``confusion`` (rows: true class, columns: predicted, in ``classes`` order) is of the best epoch's
    validation, empty when the run ended before one.
    """

    status: str
    run: int = 0
    dataset_dir: str = ""
    model_dir: str = ""
    exported: bool = False
    error: str = ""
    message: str = ""
    best_val_acc: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    classes: tuple[str, ...] = ()
    checkpoint: str = ""
    skipped_images: int = 0
    confusion: tuple[tuple[int, ...], ...] = ()
    duration_s: float | None = None
    finished: str = ""
    task: str = "classification"
    headline: str = ""
    """The best epoch's validation figure in words (accuracy, mean XY error or macro F1)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """A regression or multi-label run's validation figures (``mean_error``, ``baseline_mean_error``,
    ``macro_f1``, ...); empty for classification, whose figure is ``best_val_acc``."""

    @property
    def succeeded(self) -> bool:
        return self.exported and self.status in ("completed", "early_stopped")

    def encode(self) -> str:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["confusion"] = [list(row) for row in self.confusion]
        return _dumps({k: _finite_or_none(v) for k, v in data.items()})

    @classmethod
    def decode(cls, text: str | bytes) -> TrainStatus:
        return cls.from_dict(_object(text, "training status"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainStatus:
        """The outcome from its dict form (the trainer's outcome), checked like :meth:`decode`."""
        what = "training status"
        status = _choice(data, "status", what, TRAIN_OUTCOMES)
        classes = data.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise BadMessageError(f"{what}: 'classes' must be a list of names")
        confusion = data.get("confusion", [])
        if not isinstance(confusion, list) or not all(
            isinstance(row, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in row)
            for row in confusion
        ):
            raise BadMessageError(f"{what}: 'confusion' must be a list of rows of whole numbers")
        return cls(
            status=status,
            run=_int(data, "run", what, optional=True, default=0),
            dataset_dir=_str(data, "dataset_dir", what, ""),
            model_dir=_str(data, "model_dir", what, ""),
            exported=_bool(data, "exported", what, False),
            error=_str(data, "error", what, ""),
            message=_str(data, "message", what, ""),
            best_val_acc=_num(data, "best_val_acc", what, optional=True),
            best_epoch=_int(data, "best_epoch", what, optional=True),
            epochs_run=_int(data, "epochs_run", what, optional=True, default=0),
            classes=tuple(classes),
            checkpoint=_str(data, "checkpoint", what, ""),
            skipped_images=_int(data, "skipped_images", what, optional=True, default=0),
            confusion=tuple(tuple(row) for row in confusion),
            duration_s=_num(data, "duration_s", what, optional=True),
            finished=_str(data, "finished", what, ""),
            task=_str(data, "task", what, "classification"),
            headline=_str(data, "headline", what, ""),
            metrics=_float_map(data, "metrics", what, "metric names to numbers"),
        )


# -- reaction -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReactionState:
    """What the reaction node does: enabled, the label it reacts to, why (a ``REASONS`` name), velocities.

    ``linear_x`` in m/s, ``angular_z`` in rad/s, as last published on ``cmd_vel``. ``stamp_ns`` and
    ``frame_id`` are the header of the image that label was classified from, when it came with one
    (:class:`Scores`); None and ``""`` for a plain label (and in messages of older nodes).
    """

    enabled: bool
    label: str | None
    reason: str
    linear_x: float = 0.0
    angular_z: float = 0.0
    stamp_ns: int | None = None
    frame_id: str = ""

    @property
    def moving(self) -> bool:
        return self.linear_x != 0.0 or self.angular_z != 0.0

    def encode(self) -> str:
        data = asdict(self)
        del data["stamp_ns"]
        return _dumps({**data, "stamp": _stamp_to_json(self.stamp_ns)})

    @classmethod
    def decode(cls, text: str | bytes) -> ReactionState:
        what = "reaction state"
        data = _object(text, what)
        label = data.get("label")
        if label is not None and not isinstance(label, str):
            raise BadMessageError(f"{what}: 'label' must be a string or null, got {label!r}")
        return cls(
            enabled=_bool(data, "enabled", what),
            label=label,
            reason=_str(data, "reason", what),
            linear_x=float(_num(data, "linear_x", what, optional=True, default=0.0)),
            angular_z=float(_num(data, "angular_z", what, optional=True, default=0.0)),
            stamp_ns=_stamp_from_json(data, what),
            frame_id=_str(data, "frame_id", what, ""),
        )


CONTRACTS = (Counts, TrainProgress, TrainStatus, Scores, XYResult, LabelSet, Label, ClassList, ReactionState)
"""Every result type of this module."""


def field_names(contract: type) -> tuple[str, ...]:
    """The field names of a result type (for docs and tests)."""
    return tuple(f.name for f in fields(contract))
