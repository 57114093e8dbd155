"""Bag images into a store on worker threads, with file names and manifest order fixed by bag order.

Decode+encode on workers -> reserve a name (in bag order) -> write on workers -> commit to the
manifest (in bag order). A CompressedImage already in the store's format is stored unchanged.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dli_perception.core.dataset import CaptureResult, DatasetStore, EncodedImage, Reservation
from dli_perception.core.fsutil import sha256_bytes
from dli_perception.errors import ClassFullError, DatasetError, ImageConversionError, TargetError

if TYPE_CHECKING:
    from dli_perception.core.bagio.stats import BagConversionStats

logger = logging.getLogger(__name__)


class _Undecodable(Exception):
    """An image message whose pixels cannot be decoded."""


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_truncated_jpeg(data: Any) -> bool:
    """True for JPEG bytes without the end-of-image marker (OpenCV decodes those with a grey tail)."""
    view = memoryview(data)
    if bytes(view[:3]) != _JPEG_MAGIC:
        return False
    return not bytes(view[-64:]).rstrip(b"\x00").endswith(b"\xff\xd9")


def _passthrough_ext(msg: Any, image_format: str) -> str | None:
    """``.jpg``/``.png`` when a CompressedImage's bytes can be stored unchanged in this store's format."""
    if not hasattr(msg, "format"):
        return None
    head = bytes(memoryview(msg.data)[:26]) if len(msg.data) >= 26 else b""
    if image_format == "jpg" and head.startswith(_JPEG_MAGIC):
        return ".jpg"
    if image_format == "png" and head.startswith(_PNG_MAGIC) and head[24] == 8 and head[25] in (0, 2, 6):
        return ".png"  # 8-bit grey, RGB or RGBA: what ImageFolder's loader reads correctly
    return None


def _decode_encode(msg: Any, store: DatasetStore) -> EncodedImage:
    """Worker: message -> RGB pixels -> encoded file bytes. Raises :class:`_Undecodable`.

    A CompressedImage already in the store's format is decoded only to check it, and its bytes
    are stored unchanged (no second JPEG generation, and faster).
    """
    from dli_perception.core.imaging import to_rgb8

    try:
        if hasattr(msg, "format") and _is_truncated_jpeg(msg.data):
            raise _Undecodable("truncated JPEG (no end-of-image marker)")
        rgb = to_rgb8(msg)
        ext = _passthrough_ext(msg, store.image_format)
        if ext is not None:
            data = bytes(memoryview(msg.data))
            return EncodedImage(data, ext, int(rgb.shape[1]), int(rgb.shape[0]), sha256_bytes(data))
        return store.encode(rgb)
    except _Undecodable:
        raise
    except ImageConversionError as err:
        raise _Undecodable(str(err)) from None
    except Exception as err:  # noqa: BLE001 - a corrupt message must never stop a conversion
        raise _Undecodable(f"{type(err).__name__}: {err}") from None


class Pipeline:
    """Decode+encode on workers -> reserve a name (in bag order) -> write on workers -> commit
    to the manifest (in bag order). File names and manifest order do not depend on timing."""

    def __init__(
        self, store: DatasetStore, pool: ThreadPoolExecutor | None, window: int, stats: BagConversionStats
    ) -> None:
        self.store, self.pool, self.window, self.stats = store, pool, window, stats
        self.encoding: collections.deque[tuple[Future | None, Any, dict[str, Any], int, str, dict[str, str]]] = (
            collections.deque()
        )
        self.writing: collections.deque[tuple[Future | None, Reservation]] = collections.deque()

    def submit(self, msg: Any, target: dict[str, Any], t_img: int, source: str, provenance: dict[str, str]) -> None:
        """Queue one image with its target (``{"label": c}``, ``{"xy": (x, y)}`` or ``{"labels": (...)}``)."""
        fut = self.pool.submit(_decode_encode, msg, self.store) if self.pool is not None else None
        self.encoding.append((fut, msg, target, t_img, source, provenance))
        while len(self.encoding) > self.window:
            self._reserve_one()
        while len(self.writing) > self.window:
            self._commit_one()

    def drain(self) -> None:
        while self.encoding:
            self._reserve_one()
        while self.writing:
            self._commit_one()

    def abort(self) -> None:
        """After an error: stop encoding, keep the files already written whole, release the rest."""
        for fut, *_ in self.encoding:
            if fut is not None:
                fut.cancel()
        self.encoding.clear()
        while self.writing:
            fut, reservation = self.writing.popleft()
            try:
                if fut is not None:
                    fut.result()
            except BaseException:  # noqa: BLE001 - the first error is the one re-raised
                self.store.release(reservation)
                continue
            with contextlib.suppress(DatasetError):
                self.store.commit(reservation)

    def _reserve_one(self) -> None:
        fut, msg, target, t_img, source, provenance = self.encoding.popleft()
        try:
            encoded = fut.result() if fut is not None else _decode_encode(msg, self.store)
        except _Undecodable as err:
            self.stats.skipped_bad += 1
            logger.debug("skipping an undecodable image at %d ns: %s", t_img, err)
            return
        try:
            reservation = self.store.reserve(encoded, stamp_ns=t_img, source=source, **target, **provenance)
        except ClassFullError:
            self.stats.skipped_full += 1
            return
        except TargetError as err:  # a target the dataset refuses (e.g. a label labels.txt does not declare)
            self.stats.skipped_invalid_target += 1
            text = str(target.get("labels", target.get("xy", "")))
            self.stats.invalid_targets[text] = self.stats.invalid_targets.get(text, 0) + 1
            logger.debug("skipping an image at %d ns: %s", t_img, err)
            return
        if isinstance(reservation, CaptureResult):
            self.stats.duplicates += 1
            return
        if self.pool is not None:
            self.writing.append((self.pool.submit(self.store.write_reserved, reservation), reservation))
            return
        try:
            self.store.write_reserved(reservation)
        except BaseException:
            self.store.release(reservation)
            raise
        self.writing.append((None, reservation))

    def _commit_one(self) -> None:
        fut, reservation = self.writing.popleft()
        if fut is not None:
            try:
                fut.result()
            except BaseException:
                self.store.release(reservation)
                raise
        self.store.commit(reservation)
        entry = reservation.entry
        self.stats.saved_images += 1
        for label in entry.labels if entry.labels is not None else (entry.label,):
            self.stats.counts[label] = self.stats.counts.get(label, 0) + 1
