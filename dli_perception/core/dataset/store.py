"""The dataset store: one class that owns a dataset directory while a process writes it.

The pieces it delegates to: :mod:`.labels` (which class names are safe), :mod:`.encoding`
(image bytes), :mod:`.index` (dedupe and class counts), :mod:`.manifest` (the manifest file),
:mod:`.repair` (the read and repair-on-open path) and :mod:`.importing` (folders).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from dli_perception.core import fsutil, tasks
from dli_perception.core.dataset import targets
from dli_perception.core.dataset.directory import make_class_dir, open_root, take_writer_lock
from dli_perception.core.dataset.disk import os_message
from dli_perception.core.dataset.encoding import IMAGE_FORMATS, EncodedImage, encode_image
from dli_perception.core.dataset.index import CaptureResult, Reservation, StoreIndex
from dli_perception.core.dataset.layout import utc_now
from dli_perception.core.dataset.manifest import ManifestEntry, ManifestFile
from dli_perception.core.dataset.repair import RepairReport, reconcile
from dli_perception.core.splits import stratified_split
from dli_perception.errors import ClassFullError, ConfigError, DatasetError, TargetError

logger = logging.getLogger(__name__)


class DatasetStore:
    """A labelled image dataset on disk (ImageFolder layout + ``manifest.jsonl``), of one task:
    classification, regression (XY targets) or multi-label (see :mod:`.targets`).

    ``max_per_class`` (``None``: unlimited) refuses further images of a full class with
    :class:`ClassFullError`; for regression and multi-label datasets it limits the whole dataset
    (all their images share one directory). ``known_labels`` declares a multi-label dataset's
    label vocabulary (written to ``labels.txt``; it may add labels to a declared one, never drop
    any); label sets naming other labels are then refused. ``dedupe`` skips images whose file content is already stored;
    ``image_format`` is ``"jpg"`` (default, ``jpeg_quality`` 1-100) or ``"png"`` (lossless).
    Opening creates ROOT if needed, takes the writer lock and repairs what a crash left
    (see :attr:`repair_report`). ``readonly=True`` (or a read-only ROOT) opens without
    the lock and without repairs; writes then raise :class:`DatasetError`.
    One process writes a store at a time; the methods are thread-safe within it.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        max_per_class: int | None = None,
        jpeg_quality: int = 95,
        dedupe: bool = True,
        image_format: str = "jpg",
        readonly: bool = False,
        known_labels: Sequence[str] | None = None,
    ) -> None:
        if max_per_class is not None and int(max_per_class) < 1:
            raise ConfigError(f"max_per_class must be >= 1 or None, got {max_per_class}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
        if image_format not in IMAGE_FORMATS:
            raise ConfigError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        self.max_per_class = None if max_per_class is None else int(max_per_class)
        self.jpeg_quality = int(jpeg_quality)
        self.dedupe = bool(dedupe)
        self.image_format = image_format
        self._lock = threading.RLock()
        self._index = StoreIndex()
        self._checked_dirs: dict[str, Path] = {}
        self._lock_fd: int | None = None
        self._batch_depth = 0
        self._reserved = 0
        self._batch_sync_every = 0
        self._closed = False
        self._vocabulary: tuple[str, ...] | None = None
        self.readonly_reason = "opened with readonly=True" if readonly else ""

        self.root = open_root(root, readonly)
        self._manifest = ManifestFile(self.root)
        self.manifest_path = self._manifest.path
        if not readonly:
            self._lock_fd, self.readonly_reason = take_writer_lock(self.root)
            if self.readonly:
                logger.warning("dataset %s opened read-only: %s", self.root, self.readonly_reason)
        try:
            try:
                self.repair_report = self.check(repair=not self.readonly)
            except TargetError:
                raise  # the dataset's targets disagree (mixed tasks, labels.txt): opening read-only would not help
            except DatasetError as err:
                if self.readonly:
                    raise
                self.readonly_reason = f"repair failed: {err}"
                logger.warning("dataset %s opened read-only: %s", self.root, self.readonly_reason)
                self.repair_report = self.check(repair=False)
            if known_labels is not None:
                self._adopt_known_labels(known_labels)
        except BaseException:
            self.close()
            raise
        if not self.repair_report.clean:
            logger.warning("dataset %s: %s", self.root, self.repair_report.summary())
        logger.debug("opened dataset %s: %d images in %d classes", self.root, len(self), len(self._index.counts))

    # ----------------------------------------------------------------- open / close

    @property
    def readonly(self) -> bool:
        """True when this store cannot write (opened read-only, or ROOT is not writable)."""
        return bool(self.readonly_reason)

    def close(self) -> None:
        """Write pending manifest lines, close the manifest and release the writer lock."""
        with self._lock:
            if self._closed:
                return
            try:
                self._manifest.flush()
            finally:
                self._closed = True
                self._manifest.close()
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

    def __enter__(self) -> DatasetStore:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed:
                self.close()

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._index.entries)

    @property
    def entries(self) -> list[ManifestEntry]:
        """All images in capture order (a copy)."""
        with self._lock:
            return list(self._index.entries)

    def counts(self) -> dict[str, int]:
        """Images per class (classification), ``{"xy": n}`` (regression) or images per label
        (multi-label; a label without images is absent), sorted by name."""
        with self._lock:
            return targets.counts_of(self._index.entries, self.task, self._index.counts)

    def classes(self) -> list[str]:
        """What a model trained on this dataset outputs, in order: the class names with images
        (ImageFolder's sorted order), the label vocabulary (``labels.txt``, else the labels in use,
        sorted) or ``["x", "y"]`` for regression."""
        with self._lock:
            task = self.task
            if task == tasks.REGRESSION:
                return list(tasks.XY_NAMES)
            if task == tasks.MULTILABEL and self._vocabulary is not None:
                return list(self._vocabulary)
            return list(self.counts())

    @property
    def label_vocabulary(self) -> tuple[str, ...] | None:
        """The labels declared in ``labels.txt`` (multi-label datasets), or None when none are declared."""
        return self._vocabulary

    def declare_labels(self, labels: Iterable[str]) -> tuple[str, ...]:
        """Declare (or redeclare) this multi-label dataset's label vocabulary; ``labels.txt`` is written
        atomically. :class:`TargetError` when the dataset holds another task or images use a label
        left out (nothing changes then); :class:`DatasetError` when read-only."""
        names = tasks.validate_label_set(labels)
        with self._lock:
            self.check_writable()
            targets.check_consistent(self.root, self._index.entries, names)
            self._vocabulary = targets.write_vocabulary(self.root, names)
            return self._vocabulary

    def _adopt_known_labels(self, known_labels: Sequence[str]) -> None:
        known = targets.widened_vocabulary(self.root, self._vocabulary, known_labels)
        if known != self._vocabulary and self.readonly:
            targets.check_consistent(self.root, self._index.entries, known)
            self._vocabulary = known
        elif known != self._vocabulary:
            self.declare_labels(known)

    def path_of(self, entry: ManifestEntry | str) -> Path:
        """Absolute path of an entry (or of a manifest ``file`` string)."""
        rel = entry.file if isinstance(entry, ManifestEntry) else entry
        return self.root.joinpath(*rel.split("/"))

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[list[ManifestEntry], list[ManifestEntry]]:
        """Stratified, reproducible train/validation split: the one training uses.

        Classes are numbered in name order and each class's images taken in file order, as
        training reads them, then :func:`~dli_perception.core.splits.stratified_split` decides; so
        ``dataset split`` shows exactly the validation images a training run with the same seed
        holds out. A class of one image stays in training.
        """
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        classes = sorted({entry.label for entry in self.entries})  # one bucket for regression and multilabel
        index = {label: i for i, label in enumerate(classes)}
        ordered = sorted(self.entries, key=lambda e: (index[e.label], e.file))
        train_idx, val_idx = stratified_split([index[e.label] for e in ordered], val_fraction, seed, allow_single=True)
        return [ordered[i] for i in train_idx], [ordered[i] for i in val_idx]

    # ----------------------------------------------------------------- writing

    def encode(self, image_rgb: np.ndarray) -> EncodedImage:
        """Encode an image with this store's format and quality (thread-safe, no disk access)."""
        return encode_image(image_rgb, self.image_format, self.jpeg_quality)

    @property
    def task(self) -> str | None:
        """The dataset's task (see :mod:`dli_perception.core.tasks`): its images', else multilabel when
        it declares a label vocabulary, else None (an empty dataset)."""
        with self._lock:
            task = tasks.task_of(self._index.entries[:1])
            return task or (tasks.MULTILABEL if self._vocabulary is not None else None)

    def add(
        self,
        image_rgb: np.ndarray,
        label: str | None = None,
        stamp_ns: int = 0,
        source: str = "",
        *,
        xy: tuple[float, float] | None = None,
        labels: Iterable[str] | None = None,
    ) -> CaptureResult:
        """Save one ``HxWx3`` RGB uint8 image under class ``label``, or with a regression target
        ``xy`` (normalised, see :mod:`dli_perception.core.tasks`) or a multi-label set ``labels``.

        Raises :class:`InvalidLabelError` (bad name), :class:`ClassFullError` (``max_per_class``
        reached) or :class:`DatasetError` (disk full, read-only); in every case nothing was written.
        A duplicate (``dedupe``) is not written and returned with ``duplicate=True``.
        """
        targets.target_of(label, xy, labels)  # refuse a bad target before spending time on encoding
        self.check_writable()
        return self.add_encoded(self.encode(image_rgb), label, stamp_ns, source, xy=xy, labels=labels)

    def add_encoded(
        self,
        encoded: EncodedImage,
        label: str | None = None,
        stamp_ns: int = 0,
        source: str = "",
        *,
        xy: tuple[float, float] | None = None,
        labels: Iterable[str] | None = None,
        **provenance: str,
    ) -> CaptureResult:
        """Save an already encoded image (see :meth:`encode`); same rules and errors as :meth:`add`.

        ``provenance``: ``robot``, ``bag``, ``topic`` recorded in the manifest line.
        """
        reservation = self.reserve(encoded, label, stamp_ns, source, xy=xy, labels=labels, **provenance)
        if isinstance(reservation, CaptureResult):
            return reservation
        try:
            self.write_reserved(reservation)
        except BaseException:
            self.release(reservation)
            raise
        return self.commit(reservation)

    # A pipeline (bag conversion) splits add_encoded in three so file writes can run on worker
    # threads while names and manifest order stay deterministic: reserve() and commit() in
    # order on one thread, write_reserved() anywhere in between.

    def reserve(
        self,
        encoded: EncodedImage,
        label: str | None = None,
        stamp_ns: int = 0,
        source: str = "",
        *,
        xy: tuple[float, float] | None = None,
        labels: Iterable[str] | None = None,
        **provenance: str,
    ) -> Reservation | CaptureResult:
        """Claim a file name for an image: checks the target, duplicates and the class limit.

        A target of another task than the dataset's is refused (:class:`TargetError`): one
        dataset holds one task. For regression and multi-label images the class limit counts
        every image of the dataset.

        Returns a :class:`CaptureResult` with ``duplicate=True`` when nothing needs writing,
        else a :class:`Reservation` that must be passed to :meth:`write_reserved` and then
        :meth:`commit`, or to :meth:`release`. Raises like :meth:`add`.
        """
        label, xy, label_set = targets.target_of(label, xy, labels)
        task = targets.target_task(xy, label_set)
        if encoded.ext not in (".jpg", ".png"):
            raise ConfigError(f"encoded image extension must be .jpg or .png, got {encoded.ext!r}")
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise ConfigError(f"stamp_ns must be >= 0, got {stamp_ns}")
        unknown = set(provenance) - {"robot", "bag", "topic"}
        if unknown:
            raise ConfigError(f"unknown provenance fields {sorted(unknown)}; use robot, bag, topic")
        with self._lock:
            self.check_writable()
            current = self.task
            if current is not None and current != task:
                raise TargetError(
                    f"dataset {self.root} holds a {current} task; an image with a "
                    f"{task} target cannot join it (one task per dataset); nothing was written"
                )
            if label_set is not None and self._vocabulary is not None:
                tasks.validate_label_set(label_set, known=self._vocabulary)
            if self.dedupe and (old := self._index.stored_as(encoded.sha256)) is not None:
                return CaptureResult(self.path_of(old), old.file, old.label, old.sha256, old.width, old.height, True)
            count = self._index.counts[label]
            if self.max_per_class is not None and count >= self.max_per_class:
                raise ClassFullError(
                    f"class {label!r} already has {count} images (max_per_class="
                    f"{self.max_per_class}); undo some captures or raise the limit"
                )
            class_dir = self._class_dir(label)
            name = self._index.free_name(label, class_dir, encoded.sha256, encoded.ext)
            entry = ManifestEntry(
                file=f"{label}/{name}",
                label=label,
                stamp_ns=stamp_ns,
                source=str(source),
                width=encoded.width,
                height=encoded.height,
                sha256=encoded.sha256,
                added=utc_now(),
                **{k: str(v or "") for k, v in provenance.items()},
                xy=xy,
                labels=label_set,
            )
            self._index.claim(entry)
            self._reserved += 1
            return Reservation(entry, class_dir / name, encoded.data, durable=self._batch_depth == 0)

    def write_reserved(self, reservation: Reservation) -> None:
        """Write a reserved image file atomically (thread-safe, no lock held).

        Raises :class:`DatasetError` (disk full, read-only); nothing is left on disk then.
        """
        try:
            fsutil.atomic_write_bytes(reservation.path, reservation.data, fsync=reservation.durable)
        except OSError as err:
            raise DatasetError(
                f"cannot save image to {reservation.path}: {os_message(err)}; nothing was written and "
                "earlier images are intact"
            ) from None

    def commit(self, reservation: Reservation) -> CaptureResult:
        """Record a written reservation in the manifest (appended and fsync'ed, or batched).

        On failure the file is removed, the reservation released, and :class:`DatasetError` raised.
        """
        entry, path = reservation.entry, reservation.path
        with self._lock:
            if reservation.durable:
                try:
                    self._manifest.append([entry])
                except DatasetError:
                    with contextlib.suppress(OSError):
                        path.unlink()
                    self._release_locked(reservation)
                    raise
            else:
                self._manifest.hold(entry, path)
            self._reserved -= 1
            self._index.entries.append(entry)
            result = CaptureResult(path, entry.file, entry.label, entry.sha256, entry.width, entry.height)
            held = len(self._manifest.pending)
            if held and (self._batch_depth == 0 or held >= self._batch_sync_every):
                self._manifest.flush()
            return result

    def release(self, reservation: Reservation) -> None:
        """Give up a reservation whose file was not (or could not be) written."""
        with self._lock:
            self._release_locked(reservation)

    def _release_locked(self, reservation: Reservation) -> None:
        self._reserved -= 1
        self._index.unclaim(reservation.entry)

    @contextlib.contextmanager
    def batch(self, sync_every: int = 256) -> Iterator[DatasetStore]:
        """Group many adds: files are fsync'ed and their manifest lines written every
        ``sync_every`` images and at the end, instead of after each image (several times faster).

        A crash inside the batch can leave the last images without manifest lines; they are
        adopted (with stamp and source lost) when the store is opened again.
        """
        with self._lock:
            self._batch_depth += 1
            if self._batch_depth == 1:
                self._batch_sync_every = max(1, int(sync_every))
        try:
            yield self
        except BaseException:
            with self._lock:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    try:
                        self._manifest.flush()
                    except DatasetError as err:  # keep the original error; this one is logged
                        logger.error("dataset %s: %s", self.root, err)
            raise
        with self._lock:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self._manifest.flush()

    def flush(self) -> None:
        """Make every image added so far durable, with its manifest line."""
        with self._lock:
            self._manifest.flush()

    def undo(self, n: int = 1) -> list[ManifestEntry]:
        """Remove the last ``n`` images (files and manifest lines); return what was removed.

        The manifest is rewritten atomically first, then the files are deleted, so a crash in
        between leaves files that are adopted again at the next open (never lines without files).
        """
        if int(n) < 0:
            raise ConfigError(f"undo count must be >= 0, got {n}")
        with self._lock:
            self.check_writable()
            self._check_idle()
            self._manifest.flush()
            entries = self._index.entries
            n = min(int(n), len(entries))
            if n == 0:
                return []
            keep, removed = entries[:-n], entries[-n:]
            self._manifest.rewrite(keep)
            self._index.reset(keep)
            for entry in removed:
                with contextlib.suppress(FileNotFoundError):
                    self.path_of(entry).unlink()
            for label in {e.label for e in removed}:
                if self._index.counts[label] == 0:
                    with contextlib.suppress(OSError):
                        (self.root / label).rmdir()
                    self._checked_dirs.pop(label, None)
            logger.info("dataset %s: undid %d capture(s)", self.root, n)
            return list(removed)

    # ----------------------------------------------------------------- check / repair

    def check(self, repair: bool = True, verify: bool = False) -> RepairReport:
        """Compare the manifest with the files on disk; with ``repair`` fix what is found.

        See :class:`RepairReport` for what is found and done. ``verify=True`` also hashes
        every file (slow) and reports content that no longer matches the manifest.
        Called by the constructor; the in-memory index is rebuilt from the result.
        """
        with self._lock:
            if repair:
                self.check_writable()
            self._check_idle()
            self._manifest.flush()
            report = RepairReport(applied=repair)
            kept, rewrite = reconcile(self.root, self._manifest.read_bytes(), report, verify)
            vocabulary = targets.read_vocabulary(self.root)
            targets.check_consistent(self.root, kept, vocabulary)  # TargetError before anything is rewritten
            self._vocabulary = vocabulary
            if rewrite and repair:
                self._manifest.rewrite(kept)
                report.manifest_rewritten = True
            self._index.reset(kept)
            return report

    # ----------------------------------------------------------------- internals

    def check_writable(self) -> None:
        """Raise :class:`DatasetError` when this store cannot write (closed or read-only)."""
        if self._closed:
            raise DatasetError(f"dataset {self.root} is closed; open it again to write")
        if self.readonly:
            raise DatasetError(f"dataset {self.root} is read-only ({self.readonly_reason}); nothing was written")

    def _class_dir(self, label: str) -> Path:
        """The directory of a (validated) class (see :func:`make_class_dir`), cached once checked."""
        cached = self._checked_dirs.get(label)
        if cached is not None and not cached.is_symlink() and cached.is_dir():
            return cached  # re-checked every time: the directory may have been replaced by a link since
        path = make_class_dir(self.root, label)
        self._checked_dirs[label] = path
        return path

    def _check_idle(self) -> None:
        if self._reserved:
            raise DatasetError("images are being written; wait until they are saved and try again")
