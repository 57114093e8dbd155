"""The classifier's results (:mod:`dli_perception.core.contracts` re-exports them; import them from there).

:class:`Scores`, :class:`XYResult` and :class:`LabelSet` are made from one camera image each and carry its
header; :class:`Label` is the plain label and :class:`ClassList` the model's classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from dli_perception.core.contract_fields import (
    _bool,
    _dumps,
    _encode_frame_result,
    _float_map,
    _frame_result,
    _load,
    _num,
    _object,
    _str,
)
from dli_perception.errors import BadMessageError

# -- classifier -----------------------------------------------------------------------------------


class _FromOneFrame:
    """What the results made from one camera image share: their JSON encoding (:func:`_encode_frame_result`)
    and the decoding of the header and timing fields (:func:`_frame_result`); each result decodes its own
    fields in ``_own_fields`` and names itself in error messages with ``_what``."""

    _what: ClassVar[str]

    def encode(self) -> str:
        return _encode_frame_result(self)

    @classmethod
    def decode(cls, text: str | bytes) -> Any:
        data, common = _frame_result(text, cls._what)
        return cls(**cls._own_fields(data, cls._what), **common)

    @classmethod
    def _own_fields(cls, data: dict[str, Any], what: str) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Scores(_FromOneFrame):
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

    _what: ClassVar[str] = "classifier scores"

    @classmethod
    def _own_fields(cls, data: dict[str, Any], what: str) -> dict[str, Any]:
        return {
            "label": _str(data, "label", what),
            "score": float(_num(data, "score", what)),
            "raw_label": _str(data, "raw_label", what, ""),
            "raw_score": float(_num(data, "raw_score", what, optional=True, default=0.0)),
            "scores": _float_map(data, "scores", what, "class names to probabilities"),
            "changed": _bool(data, "changed", what, False),
        }


@dataclass(frozen=True)
class XYResult(_FromOneFrame):
    """One frame of a regression model: the target point, normalised to [-1, 1] (centre 0, x right,
    y down), after EMA smoothing (``x``, ``y``) and as the model gave it (``raw_x``, ``raw_y``).

    The header and timing fields mean what they mean in :class:`Scores`. The same point goes out as
    a ``geometry_msgs/PointStamped`` on ``xy`` with the source image's header.
    """

    stamp_ns: int
    frame_id: str
    x: float
    y: float
    raw_x: float = 0.0
    raw_y: float = 0.0
    latency_ms: float | None = None
    inference_ms: float | None = None
    model: str = ""
    stages_ms: dict[str, float] = field(default_factory=dict)

    _what: ClassVar[str] = "XY result"

    @classmethod
    def _own_fields(cls, data: dict[str, Any], what: str) -> dict[str, Any]:
        x, y = float(_num(data, "x", what)), float(_num(data, "y", what))
        return {
            "x": x,
            "y": y,
            "raw_x": float(_num(data, "raw_x", what, optional=True, default=x)),
            "raw_y": float(_num(data, "raw_y", what, optional=True, default=y)),
        }


@dataclass(frozen=True)
class LabelSet(_FromOneFrame):
    """One frame of a multi-label model: the labels present (score at or over their threshold, in the
    model's output order), every label's score (sigmoid, 0-1) and threshold.

    The header and timing fields mean what they mean in :class:`Scores`; ``changed`` is True when the
    active set differs from the previous frame's.
    """

    stamp_ns: int
    frame_id: str
    labels: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    changed: bool = False
    latency_ms: float | None = None
    inference_ms: float | None = None
    model: str = ""
    stages_ms: dict[str, float] = field(default_factory=dict)

    _what: ClassVar[str] = "label set"  # encode writes the labels tuple as a JSON list

    @classmethod
    def _own_fields(cls, data: dict[str, Any], what: str) -> dict[str, Any]:
        labels = data.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
            raise BadMessageError(f"{what}: 'labels' must be a list of label names")
        scores = _float_map(data, "scores", what, "label names to scores")
        if any(not 0.0 <= v <= 1.0 for v in scores.values()):
            raise BadMessageError(f"{what}: every score must lie in [0, 1]")
        return {
            "labels": tuple(labels),
            "scores": scores,
            "thresholds": _float_map(data, "thresholds", what, "label names to thresholds"),
            "changed": _bool(data, "changed", what, False),
        }


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
