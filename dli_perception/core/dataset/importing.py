"""Import an ImageFolder-style directory (``SRC/<class>/<image>``) into a store."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dli_perception.core.dataset.encoding import read_image_file
from dli_perception.core.dataset.labels import validate_label
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS
from dli_perception.core.progress import ProgressCallback
from dli_perception.errors import ClassFullError, DatasetError, InvalidLabelError

if TYPE_CHECKING:
    from dli_perception.core.dataset.store import DatasetStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class ImportStats:
    """Result of :func:`import_folder`: images saved per class and what was skipped."""

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
    """Import an ImageFolder-style directory (``SRC/<class>/<image>``) into ``store``.

    JPEG and PNG files are copied byte for byte; other formats are re-encoded. Files
    that do not decode completely are skipped and counted, directories with invalid
    class names are skipped and counted. ``progress(done, total)`` is called as files
    are processed; setting ``stop_event`` stops early (what was imported stays).
    """
    src = check_source(store, src_root, "import source")
    stats = ImportStats()
    jobs = _list_images(src, stats)
    saved: Counter[str] = Counter()
    stats.cancelled = import_each(
        store, jobs, lambda job: _import_one(store, src, job[0], job[1], stats, saved), progress, stop_event
    )
    stats.counts = dict(sorted(saved.items()))
    return stats


def check_source(store: DatasetStore, src: str | os.PathLike, what: str) -> Path:
    """``src`` as a Path, once it is a directory outside the dataset and the dataset can be written.

    Raises :class:`DatasetError` (``what`` names the source in the message) before anything is read.
    """
    path = Path(src)
    if not path.is_dir():
        raise DatasetError(f"{what} {path} is not a directory")
    resolved = path.resolve()
    if resolved == store.root or store.root in resolved.parents:
        raise DatasetError(f"cannot import {path} into itself ({store.root})")
    store.check_writable()
    return path


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by extension), sorted; hidden ones left out."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def import_each(
    store: DatasetStore,
    jobs: Sequence[T],
    one: Callable[[T], None],
    progress: ProgressCallback | None,
    stop_event: threading.Event | None,
) -> bool:
    """Call ``one(job)`` for every job in one store batch, reporting ``progress(done, total)`` after each.

    Returns True when ``stop_event`` stopped it early (what was imported stays).
    """
    with store.batch():
        for done, job in enumerate(jobs, 1):
            if stop_event is not None and stop_event.is_set():
                return True
            one(job)
            if progress is not None:
                progress(done, len(jobs))
    return False


def _list_images(src: Path, stats: ImportStats) -> list[tuple[str, Path]]:
    """(class, file) for every image under a valid class directory; invalid ones counted in ``stats``."""
    jobs: list[tuple[str, Path]] = []
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = image_files(class_dir)
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
    if add_counted(stats, lambda: store.add_encoded(encoded, label, 0, f"import:{src.name}/{rel}")):
        saved[label] += 1


def add_counted(stats: Any, add: Callable[[], Any]) -> bool:
    """Run ``add()`` (a store's ``add_encoded``); True when it saved an image. A full class is counted in
    ``stats.skipped_full`` and a duplicate in ``stats.duplicates`` (both then False)."""
    try:
        result = add()
    except ClassFullError:
        stats.skipped_full += 1
        return False
    if result.duplicate:
        stats.duplicates += 1
        return False
    return True
