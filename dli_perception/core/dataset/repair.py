"""The read path: compare the manifest with the files on disk and repair what a crash left.

Crash safety: an image is written to a temp file and renamed into place *before* its
manifest line is appended, so a crash can leave an image without a line (adopted here, with
stamp and source lost) but never a line without its image. What else can be found, and what
a repair does about it, is listed on :class:`RepairReport`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from dli_perception.core import fsutil, tasks
from dli_perception.core.dataset.encoding import probe_image
from dli_perception.core.dataset.labels import is_canonical_label, validate_label
from dli_perception.core.dataset.layout import CORRUPT_SUFFIX, UTC, is_temp_name
from dli_perception.core.dataset.manifest import ManifestEntry
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


@dataclass
class RepairReport:
    """What :meth:`DatasetStore.check` found and (when ``applied``) repaired.

    ``adopted``: image files without a manifest line, added to it. ``dropped_missing``:
    manifest lines whose file is gone, removed. ``corrupt_lines``: 1-based numbers of
    manifest lines that are not valid entries (a crash mid-append), removed.
    ``duplicate_lines``: repeated lines for one file, removed. ``temp_removed``: leftover
    temp files, deleted. ``unreadable``: image files that do not decode, renamed to
    ``*.corrupt`` (ImageFolder then skips them). ``empty_dirs_removed``: class directories
    without files, removed (ImageFolder refuses empty classes). ``foreign``: directories
    and links ImageFolder would trip over but the store leaves alone. ``hash_mismatch``:
    files whose content no longer matches the manifest (only with ``verify=True``).
    ``no_target``: image files without a manifest line under ``xy/`` or ``multilabel/`` (regression
    and multi-label images): their target lived only in the lost line, so they are never adopted
    (least of all as a class named ``xy``); they are left where they are, unused, and reported
    each time until they are deleted or added again with their targets.
    """

    adopted: list[str] = field(default_factory=list)
    dropped_missing: list[str] = field(default_factory=list)
    corrupt_lines: list[int] = field(default_factory=list)
    duplicate_lines: list[str] = field(default_factory=list)
    temp_removed: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    empty_dirs_removed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    hash_mismatch: list[str] = field(default_factory=list)
    no_target: list[str] = field(default_factory=list)
    manifest_rewritten: bool = False
    applied: bool = True

    @property
    def clean(self) -> bool:
        """True when the store was fully consistent (nothing found at all)."""
        return not (
            self.adopted
            or self.dropped_missing
            or self.corrupt_lines
            or self.duplicate_lines
            or self.temp_removed
            or self.unreadable
            or self.empty_dirs_removed
            or self.foreign
            or self.hash_mismatch
            or self.no_target
        )

    def summary(self) -> str:
        """One line for logs: the non-empty findings and whether they were repaired."""
        parts = []
        for name in (
            "adopted",
            "dropped_missing",
            "corrupt_lines",
            "duplicate_lines",
            "temp_removed",
            "unreadable",
            "empty_dirs_removed",
            "foreign",
            "hash_mismatch",
            "no_target",
        ):
            items = getattr(self, name)
            if items:
                shown = ", ".join(str(x) for x in items[:5]) + (", ..." if len(items) > 5 else "")
                parts.append(f"{name}={len(items)} [{shown}]")
        if not parts:
            return "dataset is consistent"
        if self.no_target:
            parts.append("images without a manifest line under xy/ or multilabel/ are left in place unused (their "
                         "target is unknown): delete them or add them again with their targets")  # fmt: skip
        return "; ".join(parts) + ("" if self.applied else " (not repaired: store is read-only)")


def reconcile(
    root: Path, manifest: bytes, report: RepairReport, verify: bool = False
) -> tuple[list[ManifestEntry], bool]:
    """The entries the store at ``root`` holds, and whether its manifest must be rewritten.

    ``manifest`` is the manifest's content. Findings go to ``report``; files on disk are
    changed (temp files removed, undecodable ones renamed, empty class directories removed)
    only when ``report.applied``. ``verify`` hashes every file against its line.
    """
    entries, rewrite = parse_manifest(manifest, report)
    kept: list[ManifestEntry] = []
    for entry in entries:
        path = root.joinpath(*entry.file.split("/"))
        if not path.is_file() or path.is_symlink():
            report.dropped_missing.append(entry.file)
            rewrite = True
            continue
        if verify and fsutil.sha256_file(path) != entry.sha256:
            report.hash_mismatch.append(entry.file)
        kept.append(entry)
    class_dirs = {e.label for e in entries if e.task == tasks.CLASSIFICATION}
    adopted = scan_disk(root, {e.file for e in entries}, report, class_dirs)
    kept.extend(adopted)
    return kept, rewrite or bool(adopted)


def parse_manifest(raw: bytes, report: RepairReport) -> tuple[list[ManifestEntry], bool]:
    """Parse the manifest's bytes; returns the valid entries and whether it must be rewritten."""
    rewrite = bool(raw) and not raw.endswith(b"\n")  # a half-written last line
    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            entry = ManifestEntry.from_json(json.loads(line.decode("utf-8")))
            check_entry_file(entry)
        except (TypeError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
            logger.debug("manifest line %d is invalid: %s", number, err)
            report.corrupt_lines.append(number)
            rewrite = True
            continue
        if entry.file in seen:
            report.duplicate_lines.append(entry.file)
            rewrite = True
            continue
        seen.add(entry.file)
        entries.append(entry)
    return entries, rewrite


def check_entry_file(entry: ManifestEntry) -> None:
    """``ValueError`` unless the entry's file is ``<class>/<image name>`` for its canonical class."""
    parts = entry.file.split("/")
    if len(parts) != 2 or parts[0] != entry.label:
        raise ValueError(f"file {entry.file!r} is not <class>/<name> for class {entry.label!r}")
    if validate_label(entry.label) != entry.label:
        raise ValueError(f"class {entry.label!r} is not in canonical form")
    name = parts[1]
    if not name or name.startswith(".") or "\\" in name or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"file name {name!r} is not an image file name")


def scan_disk(
    root: Path, listed: set[str], report: RepairReport, class_dirs: set[str] | frozenset[str] = frozenset()
) -> list[ManifestEntry]:
    """Walk ROOT: remove temp files, adopt orphan images, report foreign entries.

    Orphans under ``xy/`` or ``multilabel/`` are adopted only when the manifest has classification
    images in that directory (a class of that name); otherwise they go to ``report.no_target``.
    """
    adopted: list[ManifestEntry] = []
    for top in sorted(os.scandir(root), key=lambda d: d.name):
        if top.is_file(follow_symlinks=False):
            if is_temp_name(top.name):
                _remove_temp(Path(top.path), top.name, report)
            continue
        if not top.is_dir(follow_symlinks=False):
            report.foreign.append(top.name)  # a link or special file; ImageFolder may follow it
            continue
        if not is_canonical_label(top.name):
            report.foreign.append(top.name + "/")
            continue
        no_target = top.name in tasks.TARGET_DIRS.values() and top.name not in class_dirs
        adopted.extend(_scan_class_dir(top, listed, report, no_target))
    return adopted


def _scan_class_dir(top: os.DirEntry, listed: set[str], report: RepairReport, no_target: bool) -> list[ManifestEntry]:
    """One class directory: its temp files, its images without a line, and whether it is empty."""
    adopted: list[ManifestEntry] = []
    n_files = 0
    for item in sorted(os.scandir(top.path), key=lambda d: d.name):
        n_files += 1
        rel = f"{top.name}/{item.name}"
        if is_temp_name(item.name) and item.is_file(follow_symlinks=False):
            _remove_temp(Path(item.path), rel, report)
            n_files -= 1
            continue
        if rel in listed or item.name.startswith("."):
            continue
        if Path(item.name).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if not item.is_file(follow_symlinks=False):
            report.foreign.append(rel)
            continue
        if no_target:
            report.no_target.append(rel)
            continue
        entry = _adopt(Path(item.path), top.name, rel, report)
        if entry is not None:
            adopted.append(entry)
    if n_files == 0:
        report.empty_dirs_removed.append(top.name + "/")
        if report.applied:
            with contextlib.suppress(OSError):
                os.rmdir(top.path)
    return adopted


def _remove_temp(path: Path, rel: str, report: RepairReport) -> None:
    report.temp_removed.append(rel)
    if report.applied:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _adopt(path: Path, label: str, rel: str, report: RepairReport) -> ManifestEntry | None:
    """A manifest entry for an image found without a line, or None (renamed aside) when it does not decode."""
    try:
        data = path.read_bytes()
        _, width, height = probe_image(data)
    except (OSError, ValueError) as err:
        report.unreadable.append(rel)
        logger.warning("dataset: %s does not decode (%s)%s", rel, err, "; renamed" if report.applied else "")
        if report.applied:
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
        return None
    report.adopted.append(rel)
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return ManifestEntry(
        file=rel,
        label=label,
        stamp_ns=0,
        source="adopted",
        width=width,
        height=height,
        sha256=fsutil.sha256_bytes(data),
        added=mtime.isoformat(timespec="milliseconds"),
    )
