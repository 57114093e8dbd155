"""Bag -> dataset: :func:`bag_to_dataset` saves a bag's images into a :class:`DatasetStore`.

Labels and time: an image's time is its header stamp when non-zero, else the time the
recorder received it (the bag timestamp). A label (``std_msgs/String``, no header) is
timed by the bag timestamp. Each image gets the latest label at or before its time;
images before the first label, or while the label is ``none``/``unknown``/empty, are
skipped and counted. XY points and label sets are matched the same way (see :mod:`.targets`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dli_perception.core.bagio.bags import (
    IMAGE_TYPES,
    LABEL_TYPE,
    bag_typestore,
    connections_for,
    header_stamp,
    open_reader,
    read_labels,
    robot_name,
)
from dli_perception.core.bagio.pipeline import Pipeline
from dli_perception.core.bagio.stats import BagConversionStats
from dli_perception.core.bagio.targets import KIND_TASK, XY_TYPE, Targets, read_points
from dli_perception.core.dataset import DatasetStore, validate_label
from dli_perception.core.progress import ProgressCallback
from dli_perception.errors import ConfigError, DatasetError, TargetError

logger = logging.getLogger(__name__)


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
    xy_topic: str | None = None,
    labels_topic: str | None = None,
) -> BagConversionStats:
    """Save the images of a rosbag2 bag into ``store``, labelled by a target topic or a topic-to-class map.

    Give ``image_topic`` and one target topic: ``label_topic`` (std_msgs/String, the class being
    shown), ``xy_topic`` (geometry_msgs/PointStamped, normalised XY targets: a regression dataset)
    or ``labels_topic`` (std_msgs/String label sets: a multi-label dataset); see :mod:`.targets`.
    Or give ``class_map`` ``{image topic: class}`` (``image_topic`` then optional, and must be one of
    its keys). A target that is not valid (XY outside [-1, 1], a label the dataset's ``labels.txt``
    does not declare) skips its images, counted in ``invalid_targets``. Images are
    sensor_msgs/Image in any encoding the converter knows, or sensor_msgs/CompressedImage. ``progress(done, total)`` reports image messages read;
    setting ``stop_event`` stops early (what was saved stays). ``distro`` forces the fallback
    typestore. ``workers`` threads decode and encode (default: up to 4, by CPU count).
    Each saved image records its provenance in the manifest: ``robot`` (default:
    :func:`robot_name`), the bag's directory name, the topic and the image's stamp.

    Raises :class:`BagError` (unreadable bag, missing topic, wrong type, listing the bag's
    topics), :class:`InvalidLabelError` (bad class in ``class_map``), :class:`TargetError` (the
    dataset holds another task; nothing is read) and
    :class:`~dli_perception.errors.DatasetError` (disk full, read-only: images saved before stay).
    """
    kind, target_topic = _target_topic(label_topic, xy_topic, labels_topic, class_map)
    topic_class = _topic_classes(image_topic, target_topic, class_map)
    image_topics = list(topic_class) if topic_class is not None else [str(image_topic)]
    bag_path = Path(bag_path)
    workers = min(4, os.cpu_count() or 1) if workers is None else max(0, int(workers))
    if store.readonly:
        raise DatasetError(f"dataset {store.root} is read-only ({store.readonly_reason}); nothing was read")
    if store.task not in (None, KIND_TASK[kind]):
        raise TargetError(
            f"dataset {store.root} holds a {store.task} task; the {kind} topic gives {KIND_TASK[kind]} images "
            "(one task per dataset): convert into another dataset; nothing was read"
        )
    stats = BagConversionStats(task=KIND_TASK[kind])
    started = time.perf_counter()
    reader = open_reader(bag_path)
    try:
        image_conns = [c for t in image_topics for c in connections_for(reader, t, IMAGE_TYPES, bag_path)]
        target_type = XY_TYPE if kind == "xy" else LABEL_TYPE
        label_conns = connections_for(reader, target_topic, (target_type,), bag_path) if target_topic else []
        typestore, stats.distro, stats.definitions = bag_typestore(reader, image_conns + label_conns, distro)
        stats.robot = robot_name(bag_path) if robot is None else str(robot)
        timeline = (read_points if kind == "xy" else read_labels)(reader, label_conns, typestore)
        labels = Targets(kind, topic_class, *timeline, stats, store.label_vocabulary)
        saving = _Saving(store, typestore, labels, stats, bag_path.name)
        saving.run(reader, image_conns, workers, progress, stop_event)
    finally:
        reader.close()
    stats.counts = {k: stats.counts[k] for k in sorted(stats.counts)}
    stats.seconds = time.perf_counter() - started
    logger.info("bag %s: %s", bag_path, stats.summary().replace("\n", "; "))
    return stats


def _target_topic(
    label_topic: str | None, xy_topic: str | None, labels_topic: str | None, class_map: Mapping[str, str] | None
) -> tuple[str, str | None]:
    """The kind of target (``label``, ``xy`` or ``labels``) and its topic (None with ``class_map``)."""
    given = {"label": label_topic, "xy": xy_topic, "labels": labels_topic}
    named = [kind for kind, topic in given.items() if topic is not None]
    if len(named) + (class_map is not None) != 1:
        raise ConfigError("give exactly one of label_topic, xy_topic, labels_topic (with image_topic) or class_map")
    return (named[0], given[named[0]]) if named else ("label", None)


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


class _Saving:
    """The loop over a bag's image messages: deserialize, time, label, hand to the pipeline."""

    def __init__(
        self, store: DatasetStore, typestore: Any, labels: Targets, stats: BagConversionStats, bag_name: str
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
        target = self.labels.target_of(conn.topic, t_img)
        if target is not None:
            provenance = {"robot": self.stats.robot, "bag": self.bag_name, "topic": conn.topic}
            pipeline.submit(msg, target, t_img, f"{self.bag_name}:{conn.topic}", provenance)
