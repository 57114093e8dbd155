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
:class:`ReactionState`  ``reaction_node/state``      reaction_node, latched
==================  ===============================  =====================================

A result made from one camera image carries that image's header (``stamp`` ``{sec, nanosec}`` and
``frame_id``): :class:`Scores` always, :class:`ReactionState` when its label came with scores.
Counts, training progress and status and the class list are about many images and carry none.

No rclpy here: the module serves nodes, the CLI, the teach station and tests alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dli_perception.errors import BadMessageError

TOTAL_KEY = "_total"
"""The key of the total in :class:`Counts` JSON; a class of that name cannot be told from it."""

TRAIN_PHASES = ("load", "features", "train", "val", "epoch", "export", "done")
TRAIN_OUTCOMES = ("completed", "early_stopped", "cancelled", "failed")


def _load(text: str | bytes, what: str) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadMessageError(f"{what}: not valid JSON ({exc})") from None


def _object(text: str | bytes, what: str) -> dict[str, Any]:
    data = _load(text, what)
    if not isinstance(data, dict):
        raise BadMessageError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _num(data: dict[str, Any], key: str, what: str, *, optional: bool = False, default: Any = None) -> Any:
    """A finite number (int or float) or, when ``optional``, None/missing -> ``default``."""
    if key not in data and not optional:
        raise BadMessageError(f"{what}: missing field {key!r}")
    value = data.get(key)
    if value is None and optional:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadMessageError(f"{what}: field {key!r} must be a finite number, got {value!r}")
    return value


def _int(data: dict[str, Any], key: str, what: str, *, optional: bool = False, default: int | None = None) -> Any:
    """:func:`_num` as a whole number (a float is truncated); None stays None."""
    value = _num(data, key, what, optional=optional, default=default)
    return None if value is None else int(value)


def _choice(data: dict[str, Any], key: str, what: str, allowed: tuple[str, ...]) -> str:
    """A string field that must be one of ``allowed``."""
    value = _str(data, key, what)
    if value not in allowed:
        raise BadMessageError(f"{what}: unknown {key} {value!r} (expected one of {', '.join(allowed)})")
    return value


def _str(data: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BadMessageError(f"{what}: field {key!r} must be a string, got {value!r}")
    return value


def _bool(data: dict[str, Any], key: str, what: str, default: bool | None = None) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise BadMessageError(f"{what}: field {key!r} must be true or false, got {value!r}")
    return value


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def stamp_ns_of(header: Any) -> int:
    """The ``stamp`` of a std_msgs/Header (or anything with ``stamp.sec``/``stamp.nanosec``) in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _stamp_to_json(stamp_ns: int | None) -> dict[str, int] | None:
    if stamp_ns is None:
        return None
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return {"sec": sec, "nanosec": nanosec}


def _stamp_from_json(data: dict[str, Any], what: str) -> int | None:
    """``data["stamp"]`` ({sec, nanosec}) in nanoseconds; None when absent or null."""
    stamp = data.get("stamp")
    if stamp is None:
        return None
    if not isinstance(stamp, dict):
        raise BadMessageError(f"{what}: 'stamp' must be {{sec, nanosec}}, got {stamp!r}")
    sec, nanosec = _num(stamp, "sec", what), _num(stamp, "nanosec", what)
    return int(sec) * 1_000_000_000 + int(nanosec)


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
    """One progress event of a training run (the core's ``ProgressEvent``; units: seconds, 0-1 accuracy)."""

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

    def encode(self) -> str:
        return _dumps({k: _finite_or_none(v) for k, v in asdict(self).items()})

    @classmethod
    def decode(cls, text: str | bytes) -> TrainProgress:
        return cls.from_dict(_object(text, "training progress"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainProgress:
        """The event from its dict form (the core's ``ProgressEvent.to_dict()``), checked like :meth:`decode`."""
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
        )


# -- classifier -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """One classified frame: the decision, every class's probability, the source image's stamp.

    ``stamp_ns`` and ``frame_id`` are the source image's header; ``latency_ms`` runs from the frame's
    arrival at the classifier to this result, ``inference_ms`` is the backend alone; ``model`` is the
    model directory serving; ``stages_ms`` splits the frame's time by stage (transport, wait, convert,
    preprocess, inference, publish).
    """

    stamp_ns: int
    frame_id: str
    label: str
    score: float
    raw_label: str = ""
    raw_score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    changed: bool = False
    latency_ms: float | None = None
    inference_ms: float | None = None
    model: str = ""
    stages_ms: dict[str, float] = field(default_factory=dict)

    def encode(self) -> str:
        data = asdict(self)
        del data["stamp_ns"]
        return _dumps({"stamp": _stamp_to_json(self.stamp_ns), **data})

    @classmethod
    def decode(cls, text: str | bytes) -> Scores:
        what = "classifier scores"
        data = _object(text, what)
        stamp_ns = _stamp_from_json(data, what)
        if stamp_ns is None:
            raise BadMessageError(f"{what}: missing 'stamp' {{sec, nanosec}}")
        scores = data.get("scores", {})
        if not isinstance(scores, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()
        ):
            raise BadMessageError(f"{what}: 'scores' must map class names to probabilities")
        stages = data.get("stages_ms", {})
        if not isinstance(stages, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in stages.values()
        ):
            raise BadMessageError(f"{what}: 'stages_ms' must map stage names to milliseconds")
        return cls(
            stamp_ns=stamp_ns,
            frame_id=_str(data, "frame_id", what, ""),
            label=_str(data, "label", what),
            score=float(_num(data, "score", what)),
            raw_label=_str(data, "raw_label", what, ""),
            raw_score=float(_num(data, "raw_score", what, optional=True, default=0.0)),
            scores={str(k): float(v) for k, v in scores.items()},
            changed=_bool(data, "changed", what, False),
            latency_ms=_num(data, "latency_ms", what, optional=True),
            inference_ms=_num(data, "inference_ms", what, optional=True),
            model=_str(data, "model", what, ""),
            stages_ms={str(k): float(v) for k, v in stages.items()},
        )


@dataclass(frozen=True)
class Label:
    """A class name as sent on ``label``: plain text, or JSON ``{"label": "free", "score": 0.93}``.

    The classifier sends plain names (for simple consumers); other publishers may add a score
    (0-1). Its stamped, scored counterpart is :class:`Scores`.
    """

    label: str
    score: float | None = None

    def encode(self) -> str:
        return self.label if self.score is None else _dumps({"label": self.label, "score": self.score})

    @classmethod
    def decode(cls, text: str | bytes) -> Label:
        """Plain text (surrounding white space stripped) or a JSON object; a score must lie in [0, 1]."""
        what = "label message"
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        text = text.strip()
        if not text.startswith("{"):
            return cls(text)
        data = _object(text, what)
        label = data.get("label")
        if not isinstance(label, str):
            raise BadMessageError(f'{what}: a JSON label message needs a string "label" field')
        score = _num(data, "score", what, optional=True)
        if score is not None and not 0.0 <= score <= 1.0:
            raise BadMessageError(f"{what}: score must be a number in [0, 1], got {score!r}")
        return cls(label, None if score is None else float(score))


@dataclass(frozen=True)
class ClassList:
    """The serving model's class names, in output order (a JSON list)."""

    names: tuple[str, ...] = ()

    def encode(self) -> str:
        return _dumps(list(self.names))

    @classmethod
    def decode(cls, text: str | bytes) -> ClassList:
        data = _load(text, "class list")
        if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
            raise BadMessageError("class list: expected a JSON list of class names")
        return cls(tuple(data))


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


CONTRACTS = (Counts, TrainProgress, TrainStatus, Scores, Label, ClassList, ReactionState)
"""Every result type of this module."""


def field_names(contract: type) -> tuple[str, ...]:
    """The field names of a result type (for docs and tests)."""
    return tuple(f.name for f in fields(contract))
