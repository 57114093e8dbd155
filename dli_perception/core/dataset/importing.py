"""Import an ImageFolder-style directory (``SRC/<class>/<image>``) into a store."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dli_perception.core.dataset.encoding import read_image_file
from dli_perception.core.dataset.labels import validate_label
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS
from dli_perception.errors import ClassFullError, DatasetError, InvalidLabelError

if TYPE_CHECKING:
    from dli_perception.core.dataset.store import DatasetStore

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass
class ImportStats:
    """Result of :meth:`DatasetStore.import_folder`: images saved per class and what was skipped."""

    counts: dict[str, int] = field(default_factory=dict)
    skipped_corrupt: int = 0
    skipped_bad_label: int = 0
    skipped_full: int = 0
    duplicates: int = 0
    corrupt_files: list[str] = field(default_factory=list)
    bad_labels: list[str] = field(default_factory=list)
    cancelled: bool = False

    @property
    def saved(self) -> int:
        return sum(self.counts.values())


def import_folder(
    store: DatasetStore,
    src_root: str | os.PathLike,
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> ImportStats:
    """See :meth:`DatasetStore.import_folder`."""
    src = Path(src_root)
    if not src.is_dir():
        raise DatasetError(f"import source {src} is not a directory")
    src_resolved = src.resolve()
    if src_resolved == store.root or store.root in src_resolved.parents:
        raise DatasetError(f"cannot import {src} into itself ({store.root})")
    store.check_writable()
    stats = ImportStats()
    jobs = _list_images(src, stats)
    saved: Counter[str] = Counter()
    with store.batch():
        for done, (label, path) in enumerate(jobs, 1):
            if stop_event is not None and stop_event.is_set():
                stats.cancelled = True
                break
            _import_one(store, src, label, path, stats, saved)
            if progress is not None:
                progress(done, len(jobs))
    stats.counts = dict(sorted(saved.items()))
    return stats


def _list_images(src: Path, stats: ImportStats) -> list[tuple[str, Path]]:
    """(class, file) for every image under a valid class directory; invalid ones counted in ``stats``."""
    jobs: list[tuple[str, Path]] = []
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        try:
            label = validate_label(class_dir.name)
        except InvalidLabelError as err:
            stats.skipped_bad_label += len(files)
            stats.bad_labels.append(class_dir.name)
            logger.warning("import: skipping directory %s: %s", class_dir, err)
            continue
        jobs.extend((label, p) for p in files)
    return jobs


def _import_one(
    store: DatasetStore, src: Path, label: str, path: Path, stats: ImportStats, saved: Counter[str]
) -> None:
    try:
        encoded = read_image_file(path, store.encode)
    except ValueError as err:
        stats.skipped_corrupt += 1
        stats.corrupt_files.append(str(path))
        logger.warning("import: skipping %s: %s", path, err)
        return
    rel = path.relative_to(src).as_posix()
    try:
        result = store.add_encoded(encoded, label, 0, f"import:{src.name}/{rel}")
    except ClassFullError:
        stats.skipped_full += 1
        return
    if result.duplicate:
        stats.duplicates += 1
    else:
        saved[label] += 1
