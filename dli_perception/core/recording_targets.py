"""What the recorder saves a frame with, by task: a class name, an XY point or a label set.

The recorder records one task (see :mod:`dli_perception.core.tasks`), chosen by its ``task``
setting: ``auto`` takes the dataset's task, or classification for an empty dataset. Regression
captures carry the current XY target (normalised to [-1, 1]), multi-label captures the current
label set; the checks here refuse a bad target with a message that says what to send instead,
before anything reaches the dataset. Pure Python: the node and the tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dli_perception.core import tasks
from dli_perception.errors import TargetError

AUTO = "auto"
TASK_CHOICES = (AUTO, *tasks.TASKS)
"""Values of the recorder's ``task`` setting."""


@dataclass(frozen=True)
class Target:
    """One capture's target: exactly one of a class ``label``, an ``xy`` point or a ``labels`` set."""

    label: str | None = None
    xy: tuple[float, float] | None = None
    labels: tuple[str, ...] | None = None

    def describe(self) -> str:
        """The target in words for replies and logs: ``'cup'``, ``xy (0.25, -0.5)``, ``labels [cup, ball]``."""
        if self.xy is not None:
            return f"xy ({self.xy[0]:.4g}, {self.xy[1]:.4g})"
        if self.labels is not None:
            return f"labels [{', '.join(self.labels)}]"
        return repr(self.label)


def resolve_task(requested: str, stored: str | None) -> tuple[str, str]:
    """The task to record and, when it cannot be recorded into this dataset, why (else "").

    ``requested`` is the ``task`` setting; ``stored`` the dataset's task (None when empty).
    """
    if requested not in TASK_CHOICES:
        raise TargetError(f"task {requested!r} is not one of {', '.join(TASK_CHOICES)}")
    if requested == AUTO:
        return stored or tasks.CLASSIFICATION, ""
    if stored is not None and stored != requested:
        return requested, (
            f"the dataset holds a {stored} task but task={requested}: one dataset holds one task; "
            f"record into another dataset_dir or set task to {stored} (or auto)"
        )
    return requested, ""


def parse_known_labels(text: str) -> tuple[str, ...] | None:
    """The declared multi-label vocabulary from ``"cup,ball"`` (or a JSON list); None for ``""`` (any names)."""
    if not text.strip():
        return None
    known = tasks.parse_label_set(text)
    return known or None


def wrong_task(task: str, given: str) -> str:
    """Why a target of task ``given`` is refused by a recorder of ``task``, and what to do."""
    what = "an XY target" if given == tasks.REGRESSION else "a label set"
    return (
        f"{what} was given, but this recorder records {task}: start it with task:={given} on a {given} "
        "(or new) dataset; nothing changed"
    )


def no_target(task: str, topic: str) -> str:
    """Why a capture of a regression or multi-label recorder without a target is refused (``topic``: its input)."""
    if task == tasks.REGRESSION:
        return f"no XY target: publish a point on {topic} or set the target_xy parameter"
    return f"no label set: publish the labels shown on {topic} or set the target_labels parameter"


def check_xy(x: object, y: object) -> tuple[float, float]:
    """``(x, y)`` as a regression target, or :class:`TargetError` (not numbers, NaN, outside [-1, 1])."""
    for value in (x, y):
        if isinstance(value, float) and not math.isfinite(value):
            raise TargetError(f"XY target ({x}, {y}) is not a finite point: x and y must be numbers in [-1, 1]")
    return tasks.validate_xy(x, y)


def check_labels(labels: str | bytes | Iterable[object], known: Sequence[str] | None) -> tuple[str, ...]:
    """A multi-label target from text (comma-separated or a JSON list) or a list of names; refused with the
    reason when a name is not a valid label or (``known`` given) not a known one."""
    names = tasks.parse_label_set(labels) if isinstance(labels, (str, bytes)) else tasks.validate_label_set(labels)
    return tasks.validate_label_set(names, known)
