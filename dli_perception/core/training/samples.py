"""What training reads: a sample (an image path and its target), a loaded dataset split in two, and the
summary of what a run trained on. Filled in by :mod:`.data` (ImageFolder) and :mod:`.store_data`
(manifest targets)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dli_perception.core import tasks

Sample = tuple[str, Any]
"""``(path, target)``: a class index (classification), an ``(x, y)`` float32 array (regression) or a float32
0/1 vector over the labels (multilabel)."""


@dataclass
class DatasetSummary:
    """What a run trained on: usable image counts, skipped files and a content hash.

    ``sha256`` covers every readable image (sorted relative path + file sha256), so two runs
    with the same hash saw the same files. ``skipped`` lists unreadable images with the reason.
    """

    root: str
    classes: list[str]
    counts: dict[str, int]
    train_counts: dict[str, int] = field(default_factory=dict)
    val_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored_files: int = 0
    sha256: str = ""
    task: str = tasks.CLASSIFICATION
    images: int = 0
    """Usable images when ``counts`` do not add up to them (multilabel counts positives per label)."""

    @property
    def num_images(self) -> int:
        return self.images or sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_images"] = self.num_images
        d["num_skipped"] = len(self.skipped)
        return d


@dataclass
class TrainData:
    """A loaded dataset: output names (sorted class folders, sorted label names or ``x, y``), training and
    validation samples, and the task their targets belong to."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    summary: DatasetSummary
    task: str = tasks.CLASSIFICATION

    def targets(self, samples: Sequence[Sample]) -> np.ndarray:
        """The targets of ``samples`` as one array: int64 class indices, or float32 rows for the other tasks."""
        if self.task == tasks.CLASSIFICATION:
            return np.asarray([s[1] for s in samples], dtype=np.int64)
        width = len(self.classes)
        return np.asarray([s[1] for s in samples], dtype=np.float32).reshape(-1, width)
