"""What :class:`~dli_perception.core.live_classifier.LiveClassifier` is given and gives back.

The frame feed interface (:class:`FrameFeed`), the log callback (:data:`Log`), a model load request
(:class:`LoadRequest`), the serving model (:class:`ServingModel`), the newest frame (:class:`PendingFrame`),
a frame's result (:class:`LiveResult`) and where results go (:class:`Outputs`).
:mod:`dli_perception.core.live_classifier` re-exports every name. No ROS here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.backend_options import BackendOptions
from dli_perception.core.contracts import ClassList, LabelSet, Scores, XYResult
from dli_perception.core.decision import Decision, DecisionConfig, DecisionFilter
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.core.task_heads import MultilabelHead, RegressionHead, TaskConfig

_log = logging.getLogger("dli_perception.core.live_classifier")

Log = Callable[..., None]
"""``log(level, text, throttle_s=0.0)``: level is ``debug``, ``info``, ``warning`` or ``error``."""


def python_log(level: str, text: str, throttle_s: float = 0.0) -> None:
    """The default :data:`Log`: Python logging (no throttling)."""
    getattr(_log, level)(text)


class FrameFeed:
    """Where frames come from; this base is a push feed: the producer calls :meth:`LiveClassifier.offer`.

    A pulling feed sets ``pulls`` and implements :meth:`wait` and :meth:`poll`.
    """

    pulls = False

    def wait(self, timeout_s: float) -> None:
        """(Pulling feeds) return when a frame may be waiting, after :meth:`wake`, or after ``timeout_s``."""

    def poll(self) -> None:
        """Offer the newest waiting frame, if any, to the classifier; called by the worker after each frame."""

    def wake(self) -> None:
        """End a :meth:`wait` early (a model to swap in, shutdown)."""

    def hold(self) -> None:
        """A frame is waiting in the slot: the producer may stop delivering until :meth:`release`."""

    def release(self) -> None:
        """The worker is idle (push feeds only): deliver the next frame."""


@dataclass
class LoadRequest:
    """A model to load, with the backend settings current when it was asked for.

    ``context`` is the requester's own (given back to ``on_load_failed``).
    """

    model_dir: str
    options: BackendOptions
    reason: str
    context: Any = None


@dataclass
class ServingModel:
    """A loaded model and everything the worker needs per frame.

    ``classes`` are the output names (class names, label names, or ``x, y``); ``decision`` serves a
    classification model, ``head`` a regression or multi-label one (the other is None).
    """

    backend: Any
    selection: Any
    model_dir: str
    classes: list[str]
    preprocess: PreprocessConfig
    decision: DecisionFilter | None
    batch: np.ndarray = field(repr=False)
    load_s: float = 0.0
    refused_config: DecisionConfig | None = None
    task: str = tasks.CLASSIFICATION
    head: RegressionHead | MultilabelHead | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    """The model's own multi-label thresholds (metadata.json)."""
    refused_task_config: TaskConfig | None = None


@dataclass
class PendingFrame:
    """The newest frame, with its receive time (time.monotonic) and wall-clock receive time (ns)."""

    msg: Any
    received: float
    received_ns: int = 0


@dataclass
class LiveResult:
    """One frame's result: the contract of the model's task plus what drawing and re-publishing need.

    Exactly one of ``scores`` (with ``decision``: classification), ``xy`` (regression) and
    ``label_set`` (multilabel) is set.
    """

    scores: Scores | None
    decision: Decision | None
    rgb: np.ndarray = field(repr=False)
    header: Any = None
    xy: XYResult | None = None
    label_set: LabelSet | None = None

    @property
    def task(self) -> str:
        if self.xy is not None:
            return tasks.REGRESSION
        return tasks.MULTILABEL if self.label_set is not None else tasks.CLASSIFICATION


def _ignore(*_args: Any) -> None:
    pass


@dataclass
class Outputs:
    """Where results go: the first output as soon as it is decided (by task: ``label(name)``,
    ``point(x, y, source header)`` or ``labels(active label names)``), then the full result, and the
    serving model's output names."""

    label: Callable[[str], None] = _ignore
    result: Callable[[LiveResult], None] = _ignore
    classes: Callable[[ClassList], None] = _ignore
    point: Callable[[float, float, Any], None] = _ignore
    labels: Callable[[tuple[str, ...]], None] = _ignore
