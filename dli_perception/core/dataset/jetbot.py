"""Import the JetBot road-following layout into a regression dataset.

The JetBot collection notebook saves each image as ``xy_<x>_<y>_<id>.jpg`` in one folder, ``x`` and
``y`` being the whole pixel coordinates of the target in that image (224 x 224 there). Each image's
target is normalised by *its own* decoded size (:func:`dli_perception.core.tasks.jetbot_xy`), so
images of other sizes import correctly.

Where the images are looked for: directly in SRC, and in its immediate sub-folders (the notebook's
``dataset_xy/`` may be copied with or without an ``apex/``-style folder around it). A file whose name
does not parse, or points outside its image, is not imported: it is counted and listed
(:attr:`JetbotImportStats.bad_names`). Undecodable images are counted too. SRC is only read.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dli_perception.core import tasks
from dli_perception.core.dataset.encoding import read_image_file
from dli_perception.core.dataset.importing import (
    ProgressCallback,
    add_counted,
    check_source,
    image_files,
    import_each,
)
from dli_perception.errors import TargetError

if TYPE_CHECKING:
    from dli_perception.core.dataset.store import DatasetStore

logger = logging.getLogger(__name__)


@dataclass
class JetbotImportStats:
    """What :func:`import_jetbot` did: ``saved`` images, and every file left out with its reason."""

    saved: int = 0
    images: int = 0
    duplicates: int = 0
    skipped_full: int = 0
    bad_names: list[str] = field(default_factory=list)
    corrupt_files: list[str] = field(default_factory=list)
    cancelled: bool = False

    def summary(self) -> str:
        """A few lines for people, listing the first bad file names."""
        lines = [
            f"imported {self.saved} of {self.images} images; duplicates {self.duplicates}, "
            f"bad names {len(self.bad_names)}, undecodable {len(self.corrupt_files)}, dataset full {self.skipped_full}"
            + (" (cancelled)" if self.cancelled else "")
        ]
        if self.bad_names:
            lines.append(
                "not imported, name is not xy_<x>_<y>_<id>.jpg with a pixel inside the image: "
                + ", ".join(self.bad_names[:10])
                + (f", ... and {len(self.bad_names) - 10} more" if len(self.bad_names) > 10 else "")
            )
        if self.corrupt_files:
            lines.append("not imported, do not decode: " + ", ".join(self.corrupt_files[:10]))
        return "\n".join(lines)


def list_jetbot_images(src: Path) -> list[Path]:
    """The image files directly in ``src`` and in its immediate sub-folders, sorted (hidden ones left out)."""
    folders = [src, *sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))]
    return [path for folder in folders for path in image_files(folder)]


def is_jetbot_folder(path: str | os.PathLike) -> bool:
    """True for a road-following folder as it is: no ``manifest.jsonl``, and most of the images directly in
    it (or in its immediate sub-folders) named ``xy_<x>_<y>_<id>.jpg``. A dataset or an ImageFolder of
    classes is not one."""
    from dli_perception.core.dataset.layout import MANIFEST_NAME

    root = Path(path)
    if not root.is_dir() or (root / MANIFEST_NAME).exists():
        return False
    files = list_jetbot_images(root)
    named = sum(1 for f in files if tasks.JETBOT_NAME.match(f.name))
    return named > 0 and named * 2 > len(files)


def import_jetbot(
    store: DatasetStore,
    src: str | os.PathLike,
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> JetbotImportStats:
    """Import the road-following images under ``src`` into ``store`` (a regression dataset, or empty).

    JPEG and PNG files are stored byte for byte. ``progress(done, total)`` is called per file;
    ``stop_event`` stops early (what was imported stays). Raises :class:`DatasetError` when ``src``
    is no directory or lies inside the dataset, and :class:`TargetError` when the dataset holds
    another task (before anything is read).
    """
    src_path = check_source(store, src, "JetBot folder")
    if store.task not in (None, tasks.REGRESSION):
        raise TargetError(
            f"dataset {store.root} holds a {store.task} task; JetBot XY images need a regression dataset "
            "(one task per dataset): import into a new directory"
        )
    files = list_jetbot_images(src_path)
    stats = JetbotImportStats(images=len(files))
    stats.cancelled = import_each(
        store, files, lambda path: _import_one(store, src_path, path, stats), progress, stop_event
    )
    if stats.bad_names:
        logger.warning("JetBot import: %d file names do not parse: %s", len(stats.bad_names), stats.bad_names[:5])
    return stats


def _import_one(store: DatasetStore, src: Path, path: Path, stats: JetbotImportStats) -> None:
    rel = path.relative_to(src).as_posix()
    if tasks.JETBOT_NAME.match(path.name) is None:
        stats.bad_names.append(rel)
        return
    try:
        encoded = read_image_file(path, store.encode)
    except ValueError as err:
        stats.corrupt_files.append(rel)
        logger.warning("JetBot import: skipping %s: %s", path, err)
        return
    try:
        xy = tasks.jetbot_xy(path.name, encoded.width, encoded.height)
    except TargetError as err:
        stats.bad_names.append(rel)
        logger.warning("JetBot import: %s", err)
        return
    if add_counted(stats, lambda: store.add_encoded(encoded, stamp_ns=0, source=f"jetbot:{src.name}/{rel}", xy=xy)):
        stats.saved += 1
