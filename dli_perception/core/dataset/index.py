"""The store's in-memory index: entries in capture order, names taken, images per class, content hashes.

It answers the questions a write asks before touching the disk: is this content already
stored (dedupe), how many images does the class hold, and which file name is free; a write
holds its claimed name as a :class:`Reservation` and reports a :class:`CaptureResult`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dli_perception.core.dataset.manifest import ManifestEntry

_SEQ_RE = re.compile(r"^(\d+)_")


@dataclass(frozen=True)
class CaptureResult:
    """What :meth:`DatasetStore.add` did: ``duplicate`` means nothing was written and ``path``
    is the image already stored with the same content."""

    path: Path
    file: str
    label: str
    sha256: str
    width: int
    height: int
    duplicate: bool = False


@dataclass(frozen=True)
class Reservation:
    """A file name claimed by :meth:`DatasetStore.reserve`, not yet written or in the manifest."""

    entry: ManifestEntry
    path: Path
    data: bytes = field(repr=False)
    durable: bool = True


class StoreIndex:
    """Lookups over the store's entries; not thread-safe (the store holds its lock)."""

    def __init__(self) -> None:
        self.entries: list[ManifestEntry] = []
        self.counts: Counter[str] = Counter()
        self._files: set[str] = set()
        self._by_sha: dict[str, ManifestEntry] = {}
        self._next_seq = 1

    def reset(self, entries: list[ManifestEntry]) -> None:
        """Index exactly ``entries`` (the sequence number only ever grows)."""
        self.entries, self._files, self._by_sha = [], set(), {}
        self.counts = Counter()
        for entry in entries:
            self.entries.append(entry)
            self.claim(entry)

    def claim(self, entry: ManifestEntry) -> None:
        """Count an entry in the lookups (name, class count, sha); :attr:`entries` is separate."""
        self._files.add(entry.file)
        self.counts[entry.label] += 1
        self._by_sha.setdefault(entry.sha256, entry)
        m = _SEQ_RE.match(entry.file.split("/", 1)[1])
        if m:
            self._next_seq = max(self._next_seq, int(m.group(1)) + 1)

    def unclaim(self, entry: ManifestEntry) -> None:
        """Undo :meth:`claim` for an entry that never made it into :attr:`entries`."""
        self._files.discard(entry.file)
        self.counts[entry.label] -= 1
        if self._by_sha.get(entry.sha256) is entry:
            del self._by_sha[entry.sha256]

    def stored_as(self, sha256: str) -> ManifestEntry | None:
        """The entry already holding this content, if any."""
        return self._by_sha.get(sha256)

    def free_name(self, label: str, class_dir: Path, sha256: str, ext: str) -> str:
        """The next ``<seq>_<sha12><ext>`` name free both in the index and on disk."""
        seq = self._next_seq
        while True:
            name = f"{seq:06d}_{sha256[:12]}{ext}"
            if f"{label}/{name}" not in self._files and not (class_dir / name).exists():
                break
            seq += 1
        self._next_seq = seq + 1
        return name
