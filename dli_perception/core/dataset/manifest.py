"""The manifest: one JSON line per image (:class:`ManifestEntry`) and the file that holds them.

Each line holds ``file`` (path relative to ROOT, ``/``-separated), ``class``, ``stamp_ns``,
``source`` (topic, bag or ``"capture"``), ``width``, ``height``, ``sha256`` (of the file) and
``added`` (ISO 8601, UTC); images from a fleet also carry ``robot``, ``bag`` and ``topic``,
written only when known. The image's target depends on the dataset's task
(:mod:`dli_perception.core.tasks`): ``class`` alone for classification; ``xy`` (``[x, y]`` in
[-1, 1]) for regression; ``labels`` (a list of names, maybe empty) for multi-label. For the last
two, ``class`` names the directory that holds the images (``xy`` or ``multilabel``). :class:`ManifestFile` appends lines durably, rewrites the file
atomically, and in a batch holds lines back until their image files are on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dli_perception.core import fsutil, tasks
from dli_perception.core.dataset.disk import os_message, sync_files
from dli_perception.core.dataset.layout import MANIFEST_NAME
from dli_perception.errors import DatasetError


@dataclass(frozen=True)
class ManifestEntry:
    """One image of the store, as one manifest line. ``file`` is relative to the root, ``/``-separated."""

    file: str
    label: str
    stamp_ns: int = 0
    source: str = ""
    width: int = 0
    height: int = 0
    sha256: str = ""
    added: str = ""
    robot: str = ""
    bag: str = ""
    topic: str = ""
    xy: tuple[float, float] | None = None
    """Regression target, normalised to [-1, 1] (see :mod:`dli_perception.core.tasks`)."""
    labels: tuple[str, ...] | None = None
    """Multi-label target: the labels the image shows, sorted (empty: none of them)."""

    @property
    def task(self) -> str:
        """The task this entry's target belongs to: classification, regression or multilabel."""
        if self.xy is not None:
            return tasks.REGRESSION
        if self.labels is not None:
            return tasks.MULTILABEL
        return tasks.CLASSIFICATION

    def to_json(self) -> dict[str, Any]:
        data = {
            "file": self.file,
            "class": self.label,
            "stamp_ns": self.stamp_ns,
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "sha256": self.sha256,
            "added": self.added,
        }
        data.update((k, v) for k, v in self.provenance().items() if v)
        if self.xy is not None:
            data["xy"] = [self.xy[0], self.xy[1]]
        if self.labels is not None:
            data["labels"] = list(self.labels)
        return data

    def provenance(self) -> dict[str, Any]:
        """Where the image came from: robot, bag, topic and stamp (empty strings / 0 when unknown)."""
        return {"robot": self.robot, "bag": self.bag, "topic": self.topic, "stamp_ns": self.stamp_ns}

    def to_line(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, data: Any) -> ManifestEntry:
        """Parse one manifest object; ``TypeError``/``ValueError`` when a field is missing or bad."""
        if not isinstance(data, dict):
            raise TypeError("manifest line is not a JSON object")
        file, label = data.get("file"), data.get("class")
        if not isinstance(file, str) or not isinstance(label, str):
            raise TypeError("manifest line lacks 'file' or 'class'")
        ints = {k: data.get(k, 0) for k in ("stamp_ns", "width", "height")}
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in ints.values()):
            raise ValueError("manifest line has a bad stamp_ns, width or height")
        strs = {k: data.get(k, "") for k in ("source", "sha256", "added", "robot", "bag", "topic")}
        if any(not isinstance(v, str) for v in strs.values()):
            raise ValueError("manifest line has a bad source, sha256, added, robot, bag or topic")
        xy, labels = data.get("xy"), data.get("labels")
        if xy is not None and labels is not None:
            raise ValueError("manifest line has both 'xy' and 'labels'; an image has one task's target")
        if xy is not None:
            if not isinstance(xy, list) or len(xy) != 2:
                raise ValueError(f"manifest line has a bad 'xy' {xy!r}; expected [x, y]")
            xy = tasks.validate_xy(*xy)  # TargetError is a ValueError
        if labels is not None:
            labels = tasks.validate_label_set(labels)
        return cls(file=file, label=label, **ints, **strs, xy=xy, labels=labels)


class ManifestFile:
    """The manifest of the store at ``root``: appends (fsync'ed), atomic rewrites, batched lines.

    Not thread-safe: the store calls it under its own lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / MANIFEST_NAME
        self._fd: int | None = None
        #: Lines of a batch whose image files are written but not yet made durable.
        self.pending: list[ManifestEntry] = []
        self._pending_files: list[Path] = []

    def read_bytes(self) -> bytes:
        """The manifest's bytes (``b""`` when there is none); :class:`DatasetError` when unreadable."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as err:
            raise DatasetError(f"cannot read {self.path}: {os_message(err)}") from None

    def append(self, entries: list[ManifestEntry]) -> None:
        """Append manifest lines and fsync; on failure the manifest is cut back to its old length."""
        fd = self._handle()
        data = "".join(e.to_line() for e in entries).encode("utf-8")
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise DatasetError(
                f"cannot append to {self.path}: {os_message(err)}; the last image was not saved"
            ) from None

    def rewrite(self, entries: list[ManifestEntry]) -> None:
        """Replace the manifest atomically with ``entries``; :class:`DatasetError` leaves it unchanged."""
        text = "".join(e.to_line() for e in entries)
        try:
            fsutil.atomic_write_text(self.path, text)
        except OSError as err:
            raise DatasetError(f"cannot rewrite {self.path}: {os_message(err)}; the dataset is unchanged") from None
        self._close_handle()  # the old descriptor points at the replaced file

    def hold(self, entry: ManifestEntry, path: Path) -> None:
        """Keep a batched image's line until :meth:`flush` has made its file durable."""
        self.pending.append(entry)
        self._pending_files.append(path)

    def flush(self) -> None:
        """Make the held images durable, then append their lines."""
        if not self.pending:
            return
        try:
            sync_files(self.root, self._pending_files)
        except OSError as err:
            raise DatasetError(f"cannot flush images to disk: {os_message(err)}") from None
        self.append(self.pending)
        self.pending, self._pending_files = [], []

    def close(self) -> None:
        """Close the append descriptor (held lines are the caller's to flush first)."""
        self._close_handle()

    def _handle(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as err:
                raise DatasetError(f"cannot open {self.path}: {os_message(err)}") from None
        return self._fd

    def _close_handle(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
