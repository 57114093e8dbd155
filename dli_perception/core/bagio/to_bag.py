"""Dataset -> bag: :func:`dataset_to_bag` writes a dataset as a rosbag2 bag that converts back to it."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dli_perception.core import tasks
from dli_perception.core.bagio.bags import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    LABEL_TYPE,
    STORAGES,
    typestore_for,
)
from dli_perception.core.bagio.targets import XY_TYPE
from dli_perception.core.dataset import DatasetStore, ManifestEntry
from dli_perception.core.fsutil import fsync_dir
from dli_perception.core.progress import ProgressCallback
from dli_perception.errors import BagError, ConfigError

logger = logging.getLogger(__name__)


@dataclass
class BagWriteStats:
    """What :func:`dataset_to_bag` wrote."""

    path: Path
    images: int = 0
    labels: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    cancelled: bool = False


def dataset_to_bag(
    store_or_root: DatasetStore | str | os.PathLike,
    bag_path: str | os.PathLike,
    image_topic: str = "/image_raw",
    label_topic: str = "/teach_label",
    storage: str = "sqlite3",
    compressed: bool = False,
    distro: str = "kilted",
    frame_id: str = "camera",
    start_ns: int | None = None,
    period_ns: int = 33_333_333,
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    xy_topic: str = "/teach_xy",
    labels_topic: str = "/teach_labels",
) -> BagWriteStats:
    """Write a dataset as a rosbag2 bag that :func:`bag_to_dataset` turns back into the same dataset.

    Images go to ``image_topic`` in manifest order: sensor_msgs/Image ``bgr8`` decoded from the
    stored files, or with ``compressed`` sensor_msgs/CompressedImage holding the stored JPEG/PNG
    bytes unchanged. A std_msgs/String on ``label_topic`` precedes each change of class, at the
    same time as the image. A regression dataset writes each image's target as a
    geometry_msgs/PointStamped (normalised XY, header stamped like the image) on ``xy_topic``
    instead, a multi-label dataset its label set (comma-separated std_msgs/String, empty for
    none) on ``labels_topic``; each target just before its image, at the same time (the
    ``labels`` count of the stats counts these). Times are the images' ``stamp_ns`` when all are non-zero and
    increasing, else ``start_ns`` (default: now) plus ``period_ns`` per image; the header stamp
    equals the bag time. ``storage`` is ``sqlite3`` or ``mcap``; ``distro`` picks the message
    definitions written into the bag. The bag appears complete or not at all (cancel included).
    Raises :class:`BagError` (bag exists, write failed) and :class:`ConfigError` (bad option).
    """
    if storage not in STORAGES:
        raise ConfigError(f"storage must be one of {STORAGES}, got {storage!r}")
    if int(period_ns) <= 0:
        raise ConfigError(f"period_ns must be > 0, got {period_ns}")
    messages = _Messages(typestore_for(distro), frame_id, compressed)
    bag_path = Path(bag_path)
    if bag_path.exists():
        raise BagError(f"{bag_path} exists already; choose a new bag path (bags are never overwritten)")
    own_store = not isinstance(store_or_root, DatasetStore)
    store = DatasetStore(store_or_root, readonly=True) if own_store else store_or_root
    stats = BagWriteStats(path=bag_path)
    started = time.perf_counter()
    try:
        entries = store.entries
        task = store.task or tasks.CLASSIFICATION
        times = _timeline(entries, start_ns, int(period_ns))
        target_topic, target_type = {
            tasks.REGRESSION: (xy_topic, XY_TYPE),
            tasks.MULTILABEL: (labels_topic, LABEL_TYPE),
        }.get(task, (label_topic, LABEL_TYPE))

        def write(writer: Any) -> bool:
            image_conn = writer.add_connection(image_topic, messages.image_type, typestore=messages.typestore)
            label_conn = writer.add_connection(target_topic, target_type, typestore=messages.typestore)
            current = None
            for i, (entry, t_ns) in enumerate(zip(entries, times, strict=True), 1):
                if stop_event is not None and stop_event.is_set():
                    stats.cancelled = True
                    return False
                if task != tasks.CLASSIFICATION:
                    writer.write(label_conn, t_ns, messages.target(entry, t_ns))
                    stats.labels += 1
                elif entry.label != current:
                    writer.write(label_conn, t_ns, messages.label(entry.label))
                    stats.labels += 1
                    current = entry.label
                data = messages.image(store.path_of(entry), t_ns)
                writer.write(image_conn, t_ns, data)
                stats.images += 1
                stats.bytes_written += len(data)
                if progress is not None:
                    progress(i, len(entries))
            return True

        _write_atomically(bag_path, storage, write)
    finally:
        if own_store:
            store.close()
        stats.seconds = time.perf_counter() - started
    if not stats.cancelled:
        logger.info("wrote %d images and %d labels to %s", stats.images, stats.labels, bag_path)
    return stats


def _timeline(entries: list[ManifestEntry], start_ns: int | None, period_ns: int) -> list[int]:
    stamps = [e.stamp_ns for e in entries]
    if stamps and all(s > 0 for s in stamps) and all(b > a for a, b in itertools.pairwise(stamps)):
        return stamps
    start = time.time_ns() if start_ns is None else int(start_ns)
    return [start + i * period_ns for i in range(len(entries))]


class _Messages:
    """Serialized label and image messages for one typestore, image topic type and camera frame."""

    def __init__(self, typestore: Any, frame_id: str, compressed: bool) -> None:
        self.typestore, self.frame_id, self.compressed = typestore, frame_id, compressed
        self.image_type = COMPRESSED_TYPE if compressed else IMAGE_TYPE

    def label(self, label: str) -> bytes:
        string_cls = self.typestore.types[LABEL_TYPE]
        return self.typestore.serialize_cdr(string_cls(data=label), LABEL_TYPE)

    def target(self, entry: ManifestEntry, t_ns: int) -> bytes:
        """A regression entry's target as a PointStamped stamped ``t_ns``, a multi-label one's as a String."""
        if entry.xy is None:
            return self.label(",".join(entry.labels or ()))
        types = self.typestore.types
        point = types["geometry_msgs/msg/Point"](x=float(entry.xy[0]), y=float(entry.xy[1]), z=0.0)
        msg = types[XY_TYPE](header=self._header(t_ns), point=point)
        return self.typestore.serialize_cdr(msg, XY_TYPE)

    def _header(self, t_ns: int) -> Any:
        types = self.typestore.types
        stamp = types["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=self.frame_id)

    def image(self, path: Path, t_ns: int) -> bytes:
        """The stored file as an image message stamped ``t_ns``: its bytes unchanged when compressed,
        else decoded to ``bgr8``. :class:`BagError` when the file does not decode."""
        import cv2
        import numpy as np

        from dli_perception.core.imaging import to_rosbags_image

        types = self.typestore.types
        header = self._header(t_ns)
        if self.compressed:
            blob = path.read_bytes()
            fmt = "png" if path.suffix.lower() == ".png" else "jpeg"
            msg = types[COMPRESSED_TYPE](header=header, format=fmt, data=np.frombuffer(blob, np.uint8))
        else:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise BagError(f"cannot decode {path}; run a dataset check and try again")
            msg = to_rosbags_image(bgr, "bgr8", header, self.typestore)
        return self.typestore.serialize_cdr(msg, self.image_type)


def _write_atomically(bag_path: Path, storage: str, write: Callable[[Any], bool]) -> None:
    """Run ``write(writer)`` on a bag in a hidden temp directory beside ``bag_path`` and move the
    finished bag into place only when it returns True: the bag appears complete or not at all."""
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    bag_path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{bag_path.name}.", suffix=".tmp", dir=bag_path.parent))
    try:
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        with Writer(tmpdir / bag_path.name, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
            complete = write(writer)
        if not complete:
            return
        for part in (tmpdir / bag_path.name).iterdir():
            with open(part, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmpdir / bag_path.name, bag_path)
        fsync_dir(bag_path.parent)
    except (WriterError, OSError) as err:
        raise BagError(f"cannot write bag {bag_path}: {err}; nothing was written") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
