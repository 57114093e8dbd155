"""What a dataset's images are labelled with, per task: targets, counts, and the label vocabulary.

A dataset holds one task (see :mod:`dli_perception.core.tasks`):

* **classification**: one directory per class; ``counts()`` gives images per class.
* **regression**: every image under ``xy/`` with its ``xy`` target in the manifest;
  ``counts()`` is ``{"xy": n}``.
* **multilabel**: every image under ``multilabel/`` with its ``labels`` in the manifest;
  ``counts()`` gives images per label (an image counts once for each label it shows; labels with
  no image are absent, so an image showing none of them counts in no label, only in ``len``).

**Label vocabulary.** A multi-label dataset may declare its labels in ``labels.txt`` at its root
(one name per line, sorted; written atomically). Once declared, a label set naming any other label
is refused with :class:`~dli_perception.errors.TargetError`; the file also marks an empty dataset as
multi-label. Without it, any valid names are accepted and the vocabulary is the labels in use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from dli_perception.core import fsutil, tasks
from dli_perception.core.dataset.disk import os_message
from dli_perception.core.dataset.labels import validate_label
from dli_perception.core.dataset.manifest import ManifestEntry
from dli_perception.errors import TargetError

LABELS_NAME = "labels.txt"
"""The file at a dataset's root that declares a multi-label dataset's label vocabulary."""


def target_of(
    label: str | None, xy: tuple[float, float] | None, labels: Iterable[str] | None
) -> tuple[str, tuple[float, float] | None, tuple[str, ...] | None]:
    """The directory name and checked target of an image: a class name, an XY point or a label set."""
    given = [name for name, value in (("label", label), ("xy", xy), ("labels", labels)) if value is not None]
    if len(given) != 1:
        raise TargetError(f"an image needs exactly one target (a class label, xy or labels), got {given or 'none'}")
    if xy is not None:
        if isinstance(xy, (str, bytes)) or len(xy) != 2:
            raise TargetError(f"an XY target is a pair (x, y), got {xy!r}")
        return tasks.TARGET_DIRS[tasks.REGRESSION], tasks.validate_xy(*xy), None
    if labels is not None:
        return tasks.TARGET_DIRS[tasks.MULTILABEL], None, tasks.validate_label_set(labels)
    return validate_label(label), None, None


def target_task(xy: object, labels: object) -> str:
    """The task of an image given its (checked) ``xy`` and ``labels`` targets."""
    return tasks.REGRESSION if xy is not None else tasks.MULTILABEL if labels is not None else tasks.CLASSIFICATION


def target_key(entry: ManifestEntry) -> str:
    """A short text naming an entry's target, equal for equal targets: ``cup``, ``xy=0.1,-0.2``, ``labels=a,b``."""
    if entry.xy is not None:
        return f"xy={entry.xy[0]:.6g},{entry.xy[1]:.6g}"
    if entry.labels is not None:
        return "labels=" + ",".join(entry.labels)
    return entry.label


def counts_of(entries: Sequence[ManifestEntry], task: str | None, bucket_counts: Counter[str]) -> dict[str, int]:
    """``counts()`` of a store (see the module docstring): per class, ``{"xy": n}`` or per label, sorted."""
    if task == tasks.MULTILABEL:
        per_label = Counter(label for entry in entries for label in entry.labels or ())
        return {k: per_label[k] for k in sorted(per_label)}
    return {k: bucket_counts[k] for k in sorted(bucket_counts) if bucket_counts[k] > 0}


def read_vocabulary(root: Path) -> tuple[str, ...] | None:
    """The labels declared in ROOT/labels.txt (sorted), or None without the file.

    Blank lines and lines starting with ``#`` are ignored. :class:`TargetError` when the file cannot
    be read or names an invalid label (the dataset is not changed).
    """
    path = root / LABELS_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise TargetError(f"cannot read the label vocabulary {path}: {err}") from None
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        return tasks.validate_label_set(names)
    except TargetError as err:
        raise TargetError(f"{path}: {err}; fix the file (one label name per line)") from None


def write_vocabulary(root: Path, labels: Iterable[str]) -> tuple[str, ...]:
    """Write ROOT/labels.txt atomically with ``labels`` (checked, sorted); return them."""
    names = tasks.validate_label_set(labels)
    if not names:
        raise TargetError("a label vocabulary needs at least one label")
    try:
        fsutil.atomic_write_text(root / LABELS_NAME, "".join(f"{name}\n" for name in names))
    except OSError as err:
        raise TargetError(f"cannot write {root / LABELS_NAME}: {os_message(err)}; nothing was changed") from None
    return names


def widened_vocabulary(root: Path, declared: tuple[str, ...] | None, known: Iterable[str]) -> tuple[str, ...]:
    """The vocabulary ``known`` (checked, sorted); :class:`TargetError` when it drops a declared label."""
    names = tasks.validate_label_set(known)
    if declared is not None and not set(names) >= set(declared):
        raise TargetError(
            f"dataset {root} declares labels {list(declared)} in {LABELS_NAME}; known_labels {list(names)} "
            f"leave out {sorted(set(declared) - set(names))}. Add them, or edit {LABELS_NAME} if no image uses them"
        )
    return names


def check_consistent(root: Path, entries: Sequence[ManifestEntry], vocabulary: tuple[str, ...] | None) -> str | None:
    """The task of a store's entries; :class:`TargetError` (nothing changed) when they mix tasks, when a
    ``labels.txt`` sits in a dataset of another task, or when images use labels it does not declare."""
    try:
        task = tasks.task_of(entries)
    except TargetError as err:
        raise TargetError(
            f"dataset {root}: {err}. Nothing was changed; move the other task's images (and their manifest "
            "lines) to a dataset of their own"
        ) from None
    if vocabulary is None:
        return task
    if task not in (None, tasks.MULTILABEL):
        raise TargetError(
            f"dataset {root} holds a {task} task but declares multi-label labels in {LABELS_NAME}; "
            "remove that file or keep the images in a multi-label dataset"
        )
    used = {label for entry in entries for label in entry.labels or ()}
    unknown = sorted(used - set(vocabulary))
    if unknown:
        example = next(e.file for e in entries if set(e.labels or ()) & set(unknown))
        raise TargetError(
            f"dataset {root}: images use label(s) {unknown} (e.g. {example}) that {LABELS_NAME} does not declare "
            f"({list(vocabulary)}); add them to {LABELS_NAME}. Nothing was changed"
        )
    return tasks.MULTILABEL


def xy_spread(entries: Sequence[ManifestEntry]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, minimum and maximum of the XY targets: ``{"x": {...}, "y": {...}}``
    (empty without XY targets)."""
    import numpy as np

    points = np.asarray([e.xy for e in entries if e.xy is not None], dtype=np.float64).reshape(-1, 2)
    if not len(points):
        return {}
    return {
        name: {
            "mean": float(points[:, i].mean()),
            "std": float(points[:, i].std()),
            "min": float(points[:, i].min()),
            "max": float(points[:, i].max()),
        }
        for i, name in enumerate(tasks.XY_NAMES)
    }


def describe(task: str | None, n_images: int, counts: dict[str, int]) -> str:
    """``"8 images in 2 classes"``, ``"20 regression images (XY targets)"`` or ``"12 multi-label images, 3 labels"``."""
    if task == tasks.REGRESSION:
        return f"{n_images} regression images (XY targets)"
    if task == tasks.MULTILABEL:
        return f"{n_images} multi-label images, {len(counts)} label{'s' if len(counts) != 1 else ''} in use"
    return f"{n_images} images in {len(counts)} classes"
