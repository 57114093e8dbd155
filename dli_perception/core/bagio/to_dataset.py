"""Bag -> dataset: :func:`bag_to_dataset` saves a bag's images into a :class:`DatasetStore`.

Labels and time: an image's time is its header stamp when non-zero, else the time the
recorder received it (the bag timestamp). A label (``std_msgs/String``, no header) is
timed by the bag timestamp. Each image gets the latest label at or before its time;
images before the first label, or while the label is ``none``/``unknown``/empty, are
skipped and counted.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.core.bagio.bags import (
    IMAGE_TYPES,
    LABEL_TYPE,
    ProgressCallback,
    bag_typestore,
    connections_for,
    header_stamp,
    open_reader,
    read_labels,
    robot_name,
)
from dli_perception.core.bagio.pipeline import Pipeline
from dli_perception.core.dataset import DatasetStore, is_no_label, validate_label
from dli_perception.errors import ConfigError, DatasetError, InvalidLabelError

logger = logging.getLogger(__name__)


@dataclass
class BagConversionStats:
    """What :func:`bag_to_dataset` did. ``images`` counts image messages read; each one is
    saved (``counts``), a duplicate, or skipped for exactly one reason."""

    counts: dict[str, int] = field(default_factory=dict)
    images: int = 0
    skipped_no_label: int = 0
    skipped_unknown: int = 0
    skipped_invalid_label: int = 0
    skipped_bad: int = 0
    skipped_full: int = 0
    duplicates: int = 0
    invalid_labels: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    distro: str = ""
    definitions: str = ""
    robot: str = ""

    @property
    def saved(self) -> int:
        return sum(self.counts.values())

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few lines for people: per-class counts, then skipped counts and speed."""
        lines = [f"  {label}: {n}" for label, n in self.counts.items()] or ["  (no images saved)"]
        skipped = (
            f"saved {self.saved} of {self.images} images; skipped: no label yet {self.skipped_no_label}, "
            f"label none/unknown {self.skipped_unknown}, invalid label {self.skipped_invalid_label}, "
            f"undecodable {self.skipped_bad}, class full {self.skipped_full}; duplicates {self.duplicates}"
        )
        speed = f"{self.images_per_s:.0f} images/s, {self.mb_per_s:.1f} MB/s" + (
            " (cancelled)" if self.cancelled else ""
        )
        return "\n".join(["per class:", *lines, skipped, speed])


def bag_to_dataset(
    bag_path: str | os.PathLike,
    store: DatasetStore,
    image_topic: str | None = None,
    label_topic: str | None = None,
    class_map: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
    distro: str | None = None,
    workers: int | None = None,
    robot: str | None = None,
) -> BagConversionStats:
    """Save the images of a rosbag2 bag into ``store``, labelled by a label topic or a topic-to-class map.

    Give ``image_topic`` and ``label_topic`` (std_msgs/String, the class being shown), or
    ``class_map`` ``{image topic: class}`` (``image_topic`` then optional, and must be one of
    its keys). Images are sensor_msgs/Image in any encoding the converter knows, or
    sensor_msgs/CompressedImage. ``progress(done, total)`` reports image messages read;
    setting ``stop_event`` stops early (what was saved stays). ``distro`` forces the fallback
    typestore. ``workers`` threads decode and encode (default: up to 4, by CPU count).
    Each saved image records its provenance in the manifest: ``robot`` (default:
    :func:`robot_name`), the bag's directory name, the topic and the image's stamp.

    Raises :class:`BagError` (unreadable bag, missing topic, wrong type, listing the bag's
    topics), :class:`InvalidLabelError` (bad class in ``class_map``) and
    :class:`~dli_perception.errors.DatasetError` (disk full, read-only: images saved before stay).
    """
    topic_class = _topic_classes(image_topic, label_topic, class_map)
    image_topics = list(topic_class) if topic_class is not None else [str(image_topic)]
    bag_path = Path(bag_path)
    workers = min(4, os.cpu_count() or 1) if workers is None else max(0, int(workers))
    if store.readonly:
        raise DatasetError(f"dataset {store.root} is read-only ({store.readonly_reason}); nothing was read")
    stats = BagConversionStats()
    started = time.perf_counter()
    reader = open_reader(bag_path)
    try:
        image_conns = [c for t in image_topics for c in connections_for(reader, t, IMAGE_TYPES, bag_path)]
        label_conns = connections_for(reader, label_topic, (LABEL_TYPE,), bag_path) if label_topic is not None else []
        typestore, stats.distro, stats.definitions = bag_typestore(reader, image_conns + label_conns, distro)
        stats.robot = robot_name(bag_path) if robot is None else str(robot)
        labels = _Labels(topic_class, *read_labels(reader, label_conns, typestore), stats)
        saving = _Saving(store, typestore, labels, stats, bag_path.name)
        saving.run(reader, image_conns, workers, progress, stop_event)
    finally:
        reader.close()
    stats.counts = {k: stats.counts[k] for k in sorted(stats.counts)}
    stats.seconds = time.perf_counter() - started
    logger.info("bag %s: %s", bag_path, stats.summary().replace("\n", "; "))
    return stats


def _topic_classes(
    image_topic: str | None, label_topic: str | None, class_map: Mapping[str, str] | None
) -> dict[str, str] | None:
    """``{image topic: class}`` from ``class_map`` (None with a label topic); :class:`ConfigError` for a bad mix."""
    if (label_topic is None) == (class_map is None):
        raise ConfigError("give either label_topic (with image_topic) or class_map {topic: class}, not both")
    if class_map is None:
        if not image_topic:
            raise ConfigError("image_topic is required with label_topic")
        return None
    if not class_map:
        raise ConfigError("class_map is empty; map at least one image topic to a class")
    topic_class = {str(t): validate_label(c) for t, c in class_map.items()}
    if image_topic is not None and image_topic not in topic_class:
        raise ConfigError(f"image_topic {image_topic!r} has no class in class_map; add it or leave it out")
    return topic_class


class _Labels:
    """The class of each image: its topic's class in the map, or the latest label at or before its time."""

    def __init__(
        self, topic_class: dict[str, str] | None, times: list[int], values: list[str], stats: BagConversionStats
    ) -> None:
        self.topic_class, self.times, self.values, self.stats = topic_class, times, values, stats
        self._valid: dict[str, str | None] = {}

    def class_of(self, topic: str, t_ns: int) -> str | None:
        """The canonical class, or None after counting in the stats why the image is skipped."""
        if self.topic_class is not None:
            raw: str | None = self.topic_class[topic]
        else:
            i = bisect.bisect_right(self.times, t_ns) - 1
            raw = self.values[i] if i >= 0 else None
        return _classify_label(raw, self._valid, self.stats)


def _classify_label(raw: str | None, cache: dict[str, str | None], stats: BagConversionStats) -> str | None:
    """Canonical class for a raw label, or None after counting why the image is skipped."""
    if raw is None:
        stats.skipped_no_label += 1
        return None
    if raw in cache:
        label = cache[raw]
    else:
        label = None
        if not is_no_label(raw):
            try:
                label = validate_label(raw)
            except InvalidLabelError as err:
                logger.warning("label %r cannot be a class name (%s); its images are skipped", raw, err)
        cache[raw] = label
    if label is None:
        if is_no_label(raw):
            stats.skipped_unknown += 1
        else:
            stats.skipped_invalid_label += 1
            stats.invalid_labels[raw] = stats.invalid_labels.get(raw, 0) + 1
    return label


class _Saving:
    """The loop over a bag's image messages: deserialize, time, label, hand to the pipeline."""

    def __init__(
        self, store: DatasetStore, typestore: Any, labels: _Labels, stats: BagConversionStats, bag_name: str
    ) -> None:
        self.store, self.typestore, self.labels, self.stats, self.bag_name = store, typestore, labels, stats, bag_name

    def run(
        self,
        reader: Any,
        image_conns: list[Any],
        workers: int,
        progress: ProgressCallback | None,
        stop_event: threading.Event | None,
    ) -> None:
        total = sum(c.msgcount for c in image_conns)
        step = max(1, total // 200)
        done = 0
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.store.batch())
            pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 0 else None
            pipeline = Pipeline(self.store, pool, max(1, 2 * workers), self.stats)
            try:
                for conn, t_bag, raw in reader.messages(image_conns):
                    if stop_event is not None and stop_event.is_set():
                        self.stats.cancelled = True
                        break
                    done += 1
                    self._submit(pipeline, conn, t_bag, raw)
                    if progress is not None and (done % step == 0):
                        progress(done, total)
                pipeline.drain()
            except BaseException:
                pipeline.abort()
                raise
        if progress is not None:
            progress(done, total)

    def _submit(self, pipeline: Pipeline, conn: Any, t_bag: int, raw: Any) -> None:
        """One image message: counted, then skipped (corrupt, unlabelled) or submitted."""
        self.stats.images += 1
        self.stats.bytes_read += len(raw)
        try:
            msg = self.typestore.deserialize_cdr(raw, conn.msgtype)
            t_header = header_stamp(msg)
        except Exception as err:  # noqa: BLE001 - a corrupt message is counted, never fatal
            self.stats.skipped_bad += 1
            logger.debug("skipping a message on %s that does not deserialize: %s", conn.topic, err)
            return
        t_img = t_header if t_header > 0 else t_bag
        label = self.labels.class_of(conn.topic, t_img)
        if label is not None:
            provenance = {"robot": self.stats.robot, "bag": self.bag_name, "topic": conn.topic}
            pipeline.submit(msg, label, t_img, f"{self.bag_name}:{conn.topic}", provenance)
