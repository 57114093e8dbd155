"""Regression and multi-label training data, read through the dataset's manifest.

A classification dataset is an ImageFolder (:func:`.data.scan_image_folder`); the targets of the other
tasks (XY points, label sets) live only in ``manifest.jsonl``, so their images are listed by a read-only
:class:`~dli_perception.core.dataset.DatasetStore` and split by :meth:`DatasetStore.split`, the split
``dli-perception dataset split`` shows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.imagefiles import decode_rgb
from dli_perception.core.training.samples import DatasetSummary, Sample, TrainData
from dli_perception.errors import DatasetError, TrainingCancelledError

if TYPE_CHECKING:
    from dli_perception.core.dataset import ManifestEntry
    from dli_perception.core.training.config import TrainConfig

logger = logging.getLogger(__name__)


def dataset_task(root: str | os.PathLike) -> str | None:
    """The task of the dataset at ``root`` from its manifest; None without a manifest or images."""
    from dli_perception.core.dataset import MANIFEST_NAME, DatasetStore

    root = Path(root).expanduser()
    if not (root / MANIFEST_NAME).is_file():
        return None
    with DatasetStore(root, readonly=True) as store:
        return tasks.task_of(store.entries)


def resolve_task(root: str | os.PathLike, wanted: str) -> str:
    """The task a run trains: ``wanted``, or for ``auto`` the dataset's (classification when it has no manifest).

    :class:`DatasetError` when an explicit task disagrees with the dataset's targets.
    """
    from dli_perception.core.training.targets import TASK_CHOICES

    if wanted not in TASK_CHOICES:
        raise DatasetError(f"task must be one of {TASK_CHOICES}, got {wanted!r}")
    found = dataset_task(root) if Path(root).expanduser().is_dir() else None
    if wanted == "auto":
        return found or tasks.CLASSIFICATION
    if found is not None and found != wanted:
        raise DatasetError(
            f"dataset {root} holds {found} targets but the run asks for task {wanted}; use --task auto (or {found})"
        )
    if found is None and wanted != tasks.CLASSIFICATION:
        raise DatasetError(
            f"dataset {root} has no {wanted} targets (no manifest.jsonl with them); record or import such images"
        )
    return wanted


def _target(entry: ManifestEntry, task: str, labels: list[str]) -> np.ndarray:
    if task == tasks.REGRESSION:
        return np.asarray(entry.xy, dtype=np.float32)
    vec = np.zeros(len(labels), dtype=np.float32)
    for name in entry.labels or ():
        vec[labels.index(name)] = 1.0
    return vec


def _subsample(entries: list, cap: int | None, total: int, seed: int, salt: int) -> list:
    """A seeded share ``cap / total`` of ``entries`` (``max_images_per_class`` caps the one bucket)."""
    if not cap or total <= cap:
        return entries
    keep = max(1, round(len(entries) * cap / total))
    rng = np.random.default_rng([seed, 2, salt])
    pick = sorted(rng.choice(len(entries), keep, replace=False).tolist())
    return [entries[i] for i in pick]


def load_store_data(
    root: str | os.PathLike, task: str, config: TrainConfig, *, cancel: threading.Event | None = None
) -> TrainData:
    """The regression or multi-label images of ``root``, split like :meth:`DatasetStore.split`.

    Every image is decoded once; unreadable ones are skipped and listed. Output names are ``x, y``
    (regression) or the sorted label names that occur (multilabel). :class:`DatasetError` for fewer than
    two usable training images or no validation image, or a label set naming no label at all. Multi-label
    output names are the declared vocabulary (``labels.txt``) and the labels in use, sorted.
    """
    from dli_perception.core.dataset import DatasetStore

    root = Path(root).expanduser()
    with DatasetStore(root, readonly=True) as store:
        train_entries, val_entries = store.split(config.val_fraction, config.seed)
        path_of = store.path_of
        total = len(store)
        declared = getattr(store, "label_vocabulary", None)  # labels.txt of a multi-label dataset
    cap = config.max_images_per_class
    train_entries = _subsample(train_entries, cap, total, config.seed, 0)
    val_entries = _subsample(val_entries, cap, total, config.seed, 1)
    if task == tasks.REGRESSION:
        names = list(tasks.XY_NAMES)
    else:
        used = {name for e in train_entries + val_entries for name in (e.labels or ())}
        names = sorted(used | set(declared or ()))  # declared labels count even before they have an image
        if not names:
            raise DatasetError(f"the multi-label dataset {root} names no label in any image; label some images")
    skipped: list[dict[str, str]] = []
    digest_lines: list[str] = []

    def usable(entries: list) -> list[Sample]:
        out: list[Sample] = []
        for entry in entries:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelledError("cancelled while reading the dataset")
            path = path_of(entry)
            try:
                data = path.read_bytes()
            except OSError as exc:
                skipped.append({"file": entry.file, "reason": f"unreadable: {exc.strerror or exc}"})
                continue
            if decode_rgb(data) is None:
                skipped.append({"file": entry.file, "reason": "not a decodable image"})
                continue
            digest_lines.append(f"{entry.file}\t{hashlib.sha256(data).hexdigest()}\n")
            out.append((str(path), _target(entry, task, names)))
        return out

    train, val = usable(train_entries), usable(val_entries)
    for item in skipped:
        logger.warning("skipped %s: %s", item["file"], item["reason"])
    if len(train) < 2 or not val:
        raise DatasetError(
            f"{root} has {len(train)} usable training and {len(val)} validation image(s); a {task} run needs at "
            "least two to train on and one to validate: add images"
        )
    if task == tasks.REGRESSION:
        counts = {tasks.TARGET_DIRS[task]: len(train) + len(val)}
        train_counts, val_counts = {"xy": len(train)}, {"xy": len(val)}
    else:
        both = np.asarray([s[1] for s in train + val])
        counts = {n: int(both[:, j].sum()) for j, n in enumerate(names)}
        t = np.asarray([s[1] for s in train])
        v = np.asarray([s[1] for s in val])
        train_counts = {n: int(t[:, j].sum()) for j, n in enumerate(names)}
        val_counts = {n: int(v[:, j].sum()) for j, n in enumerate(names)}
    summary = DatasetSummary(
        root=str(root.resolve()),
        classes=names,
        counts=counts,
        train_counts=train_counts,
        val_counts=val_counts,
        skipped=skipped,
        sha256=hashlib.sha256("".join(sorted(digest_lines)).encode("utf-8")).hexdigest(),
        task=task,
        images=len(train) + len(val),
    )
    logger.info("dataset %s (%s): %d training and %d validation images", summary.root, task, len(train), len(val))
    return TrainData(classes=names, train=train, val=val, summary=summary, task=task)
