"""rosbag2 bags <-> datasets, through the pure-Python ``rosbags`` library (no ROS install needed).

:func:`bag_to_dataset` reads sqlite3 and mcap bags (the storage is detected from
``metadata.yaml``) and saves their images into a :class:`DatasetStore`;
:func:`dataset_to_bag` writes a dataset as a bag, so the two convert both ways.

Message definitions: a bag recorded by Jazzy or newer (and every mcap bag) carries its
own definitions, which are used; otherwise the typestore of ``distro`` is (Humble when
neither the caller nor the bag's metadata names one). ``sensor_msgs/Image``,
``sensor_msgs/CompressedImage`` and ``std_msgs/String`` are the same in every ROS 2
distribution, so the choice only matters for bags with unusual definitions.

Labels and time: an image's time is its header stamp when non-zero, else the time the
recorder received it (the bag timestamp). A label (``std_msgs/String``, no header) is
timed by the bag timestamp. Each image gets the latest label at or before its time;
images before the first label, or while the label is ``none``/``unknown``/empty, are
skipped and counted.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.core.dataset import (
    CaptureResult,
    DatasetStore,
    EncodedImage,
    ManifestEntry,
    Reservation,
    is_no_label,
    validate_label,
)
from dli_perception.core.fsutil import fsync_dir, sha256_bytes
from dli_perception.errors import (
    BagError,
    ClassFullError,
    ConfigError,
    DatasetError,
    ImageConversionError,
    InvalidLabelError,
)

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
LABEL_TYPE = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGES = ("sqlite3", "mcap")
#: Used when neither the caller nor the bag names a distribution (Humble bags do not).
FALLBACK_DISTRO = "humble"

ProgressCallback = Callable[[int, int], None]


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


@dataclass
class BagWriteStats:
    """What :func:`dataset_to_bag` wrote."""

    path: Path
    images: int = 0
    labels: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    cancelled: bool = False


def available_distros() -> list[str]:
    """ROS 2 distributions whose message definitions this rosbags version ships (e.g. humble, kilted)."""
    from rosbags.typesys import Stores

    return [s.value.removeprefix("ros2_") for s in Stores if s.value.startswith("ros2_")]


def typestore_for(distro: str) -> Any:
    """A fresh rosbags typestore for a ROS 2 distribution name (``humble``, ``jazzy``, ``kilted``...)."""
    from rosbags.typesys import Stores, get_typestore

    store = getattr(Stores, f"ROS2_{str(distro).strip().upper()}", None)
    if store is None:
        raise ConfigError(
            f"unknown ROS 2 distribution {distro!r}; this rosbags version knows {', '.join(available_distros())}"
        )
    return get_typestore(store)


def _open_reader(bag_path: Path) -> Any:
    from rosbags.rosbag2 import Reader, ReaderError

    try:
        reader = Reader(bag_path)
        reader.open()
    except FileNotFoundError:
        raise BagError(f"bag {bag_path} does not exist (or has no metadata.yaml)") from None
    except (ReaderError, OSError, ValueError, KeyError) as err:
        raise BagError(f"cannot read bag {bag_path}: {err}") from None
    return reader


def bag_topics(bag_path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """Topics of a bag: ``{topic: (message type, message count)}``. Raises :class:`BagError`."""
    reader = _open_reader(Path(bag_path))
    try:
        return _topic_table(reader)
    finally:
        reader.close()


def _topic_table(reader: Any) -> dict[str, tuple[str, int]]:
    return {
        name: (info.msgtype or "mixed types", info.msgcount) for name, info in sorted(reader.topics.items())
    }


def _describe_topics(table: Mapping[str, tuple[str, int]]) -> str:
    if not table:
        return "the bag has no topics"
    return "the bag has: " + ", ".join(f"{t} ({typ}, {n} msgs)" for t, (typ, n) in table.items())


def _connections_for(reader: Any, topic: str, allowed: Iterable[str], bag_path: Path) -> list[Any]:
    table = _topic_table(reader)
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        raise BagError(f"topic {topic!r} is not in bag {bag_path}; {_describe_topics(table)}")
    allowed = tuple(allowed)
    wrong = sorted({c.msgtype for c in conns if c.msgtype not in allowed})
    if wrong:
        raise BagError(
            f"topic {topic!r} in bag {bag_path} has type {', '.join(wrong)}; expected {' or '.join(allowed)}"
        )
    return conns


def _types_from_definition(msgdef: Any, msgtype: str) -> dict[str, Any]:
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    if msgdef.format == MessageDefinitionFormat.MSG:
        return dict(get_types_from_msg(msgdef.data, msgtype))
    types: dict[str, Any] = {}
    sep = "=" * 80 + "\n"
    if msgdef.data.startswith(f"{sep}IDL: "):
        for part in msgdef.data.split(sep)[1:]:
            _, idl = part.split("\n", 1)
            types.update(get_types_from_idl(idl))
    else:
        types.update(get_types_from_idl(msgdef.data))
    return types


def _bag_typestore(reader: Any, connections: list[Any], distro: str | None) -> tuple[Any, str, str]:
    """The typestore to decode ``connections`` with: (typestore, distro name, definitions source)."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import Stores, TypesysError, get_typestore

    if distro is None:
        bag_distro = (reader.ros_distro or "").strip().lower()
        distro = bag_distro if bag_distro in available_distros() else FALLBACK_DISTRO
    store = typestore_for(distro)
    bag_types: dict[str, Any] = {}
    try:
        for conn in connections:
            if conn.msgdef.format != MessageDefinitionFormat.NONE:
                bag_types.update(_types_from_definition(conn.msgdef, conn.msgtype))
    except Exception as err:  # noqa: BLE001 - the parsers raise several types for malformed text
        logger.warning("bag message definitions do not parse (%s); using the %s typestore", err, distro)
        return store, distro, "typestore"
    if not bag_types:
        return store, distro, "typestore"
    try:
        store.register(bag_types)
    except TypesysError:
        logger.info("bag definitions differ from %s's; decoding with the bag's own", distro)
        store = get_typestore(Stores.EMPTY)
        store.register(bag_types)
    return store, distro, "bag"


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
    if (label_topic is None) == (class_map is None):
        raise ConfigError("give either label_topic (with image_topic) or class_map {topic: class}, not both")
    if class_map is not None:
        if not class_map:
            raise ConfigError("class_map is empty; map at least one image topic to a class")
        topic_class = {str(t): validate_label(c) for t, c in class_map.items()}
        if image_topic is not None and image_topic not in topic_class:
            raise ConfigError(
                f"image_topic {image_topic!r} has no class in class_map; add it or leave it out"
            )
    else:
        if not image_topic:
            raise ConfigError("image_topic is required with label_topic")
        topic_class = {}
    image_topics = list(topic_class) if class_map is not None else [str(image_topic)]
    bag_path = Path(bag_path)
    workers = min(4, os.cpu_count() or 1) if workers is None else max(0, int(workers))

    if store.readonly:
        raise DatasetError(f"dataset {store.root} is read-only ({store.readonly_reason}); nothing was read")
    stats = BagConversionStats()
    started = time.perf_counter()
    reader = _open_reader(bag_path)
    try:
        image_conns = [c for t in image_topics for c in _connections_for(reader, t, IMAGE_TYPES, bag_path)]
        label_conns = (
            _connections_for(reader, label_topic, (LABEL_TYPE,), bag_path) if label_topic is not None else []
        )
        typestore, stats.distro, stats.definitions = _bag_typestore(reader, image_conns + label_conns, distro)
        label_times, label_values = _read_labels(reader, label_conns, typestore)
        total = sum(c.msgcount for c in image_conns)
        source_prefix = bag_path.name
        robot = robot_name(bag_path) if robot is None else str(robot)
        stats.robot = robot

        def label_for(conn: Any, t_ns: int) -> str | None:
            if class_map is not None:
                return topic_class[conn.topic]
            i = bisect.bisect_right(label_times, t_ns) - 1
            return label_values[i] if i >= 0 else None

        done = 0
        step = max(1, total // 200)
        valid_labels: dict[str, str | None] = {}
        with contextlib.ExitStack() as stack:
            stack.enter_context(store.batch())
            pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 0 else None
            pipeline = _Pipeline(store, pool, max(1, 2 * workers), stats)
            try:
                for conn, t_bag, raw in reader.messages(image_conns):
                    if stop_event is not None and stop_event.is_set():
                        stats.cancelled = True
                        break
                    done += 1
                    stats.images += 1
                    stats.bytes_read += len(raw)
                    try:
                        msg = typestore.deserialize_cdr(raw, conn.msgtype)
                        t_header = _header_stamp(msg)
                    except Exception as err:  # noqa: BLE001 - a corrupt message is counted, never fatal
                        stats.skipped_bad += 1
                        logger.debug(
                            "skipping a message on %s that does not deserialize: %s", conn.topic, err
                        )
                        msg = None
                    if msg is not None:
                        t_img = t_header if t_header > 0 else t_bag
                        label = _classify_label(label_for(conn, t_img), valid_labels, stats)
                        if label is not None:
                            pipeline.submit(
                                msg,
                                label,
                                t_img,
                                f"{source_prefix}:{conn.topic}",
                                {"robot": robot, "bag": source_prefix, "topic": conn.topic},
                            )
                    if progress is not None and (done % step == 0):
                        progress(done, total)
                pipeline.drain()
            except BaseException:
                pipeline.abort()
                raise
        if progress is not None:
            progress(done, total)
    finally:
        reader.close()
    stats.counts = {k: stats.counts[k] for k in sorted(stats.counts)}
    stats.seconds = time.perf_counter() - started
    logger.info("bag %s: %s", bag_path, stats.summary().replace("\n", "; "))
    return stats


def robot_name(bag_path: str | os.PathLike) -> str:
    """The robot a bag was recorded on: ``robot`` (or ``robot_name``) in the bag's ``custom_data``
    (metadata.yaml, rosbag2 Jazzy+), else the name of the folder holding the bag (fleet layout
    ``bags/<robot>/<bag>``)."""
    path = Path(bag_path).expanduser().resolve()
    with contextlib.suppress(Exception):  # a bag without readable metadata just has no custom data
        import yaml

        info = yaml.safe_load((path / "metadata.yaml").read_text(encoding="utf-8"))
        custom = (info.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
        for key in ("robot", "robot_name"):
            if str(custom.get(key) or "").strip():
                return str(custom[key]).strip()
    return path.parent.name


class _Undecodable(Exception):
    """An image message whose pixels cannot be decoded."""


def _header_stamp(msg: Any) -> int:
    from dli_perception.core.imaging import stamp_ns

    try:
        return stamp_ns(msg.header)
    except (ImageConversionError, AttributeError):
        return 0


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


class _Pipeline:
    """Decode+encode on workers -> reserve a name (in bag order) -> write on workers -> commit
    to the manifest (in bag order). File names and manifest order do not depend on timing."""

    def __init__(
        self, store: DatasetStore, pool: ThreadPoolExecutor | None, window: int, stats: BagConversionStats
    ) -> None:
        self.store, self.pool, self.window, self.stats = store, pool, window, stats
        self.encoding: collections.deque[tuple[Future | None, Any, str, int, str, dict[str, str]]] = (
            collections.deque()
        )
        self.writing: collections.deque[tuple[Future | None, Reservation]] = collections.deque()

    def submit(self, msg: Any, label: str, t_img: int, source: str, provenance: dict[str, str]) -> None:
        fut = self.pool.submit(_decode_encode, msg, self.store) if self.pool is not None else None
        self.encoding.append((fut, msg, label, t_img, source, provenance))
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
        fut, msg, label, t_img, source, provenance = self.encoding.popleft()
        try:
            encoded = fut.result() if fut is not None else _decode_encode(msg, self.store)
        except _Undecodable as err:
            self.stats.skipped_bad += 1
            logger.debug("skipping an undecodable image at %d ns: %s", t_img, err)
            return
        try:
            reservation = self.store.reserve(encoded, label, t_img, source, **provenance)
        except ClassFullError:
            self.stats.skipped_full += 1
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
        label = reservation.entry.label
        self.stats.counts[label] = self.stats.counts.get(label, 0) + 1


def _read_labels(reader: Any, label_conns: list[Any], typestore: Any) -> tuple[list[int], list[str]]:
    """All labels of the label topic, sorted by bag time (ties keep bag order)."""
    if not label_conns:
        return [], []
    labels: list[tuple[int, str]] = []
    for conn, t_bag, raw in reader.messages(label_conns):
        try:
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
        except Exception as err:  # noqa: BLE001 - a corrupt label message is skipped, not fatal
            logger.warning("skipping a label message that does not deserialize: %s", err)
            continue
        labels.append((t_bag, str(msg.data)))
    labels.sort(key=lambda x: x[0])
    return [t for t, _ in labels], [v for _, v in labels]


# --------------------------------------------------------------------------- dataset -> bag


def _timeline(entries: list[ManifestEntry], start_ns: int | None, period_ns: int) -> list[int]:
    stamps = [e.stamp_ns for e in entries]
    if stamps and all(s > 0 for s in stamps) and all(b > a for a, b in itertools.pairwise(stamps)):
        return stamps
    start = time.time_ns() if start_ns is None else int(start_ns)
    return [start + i * period_ns for i in range(len(entries))]


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
) -> BagWriteStats:
    """Write a dataset as a rosbag2 bag that :func:`bag_to_dataset` turns back into the same dataset.

    Images go to ``image_topic`` in manifest order: sensor_msgs/Image ``bgr8`` decoded from the
    stored files, or with ``compressed`` sensor_msgs/CompressedImage holding the stored JPEG/PNG
    bytes unchanged. A std_msgs/String on ``label_topic`` precedes each change of class, at the
    same time as the image. Times are the images' ``stamp_ns`` when all are non-zero and
    increasing, else ``start_ns`` (default: now) plus ``period_ns`` per image; the header stamp
    equals the bag time. ``storage`` is ``sqlite3`` or ``mcap``; ``distro`` picks the message
    definitions written into the bag. The bag appears complete or not at all (cancel included).
    Raises :class:`BagError` (bag exists, write failed) and :class:`ConfigError` (bad option).
    """
    import cv2
    import numpy as np
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    from dli_perception.core.imaging import to_rosbags_image

    if storage not in STORAGES:
        raise ConfigError(f"storage must be one of {STORAGES}, got {storage!r}")
    if int(period_ns) <= 0:
        raise ConfigError(f"period_ns must be > 0, got {period_ns}")
    typestore = typestore_for(distro)
    bag_path = Path(bag_path)
    if bag_path.exists():
        raise BagError(f"{bag_path} exists already; choose a new bag path (bags are never overwritten)")
    own_store = not isinstance(store_or_root, DatasetStore)
    store = DatasetStore(store_or_root, readonly=True) if own_store else store_or_root
    stats = BagWriteStats(path=bag_path)
    started = time.perf_counter()
    try:
        entries = store.entries
        times = _timeline(entries, start_ns, int(period_ns))
        string_cls = typestore.types[LABEL_TYPE]
        header_cls = typestore.types["std_msgs/msg/Header"]
        time_cls = typestore.types["builtin_interfaces/msg/Time"]
        compressed_cls = typestore.types[COMPRESSED_TYPE]
        bag_path.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{bag_path.name}.", suffix=".tmp", dir=bag_path.parent))
        try:
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            with Writer(
                tmpdir / bag_path.name, version=Writer.VERSION_LATEST, storage_plugin=plugin
            ) as writer:
                image_type = COMPRESSED_TYPE if compressed else IMAGE_TYPE
                image_conn = writer.add_connection(image_topic, image_type, typestore=typestore)
                label_conn = writer.add_connection(label_topic, LABEL_TYPE, typestore=typestore)
                current = None
                for i, (entry, t_ns) in enumerate(zip(entries, times, strict=True), 1):
                    if stop_event is not None and stop_event.is_set():
                        stats.cancelled = True
                        break
                    if entry.label != current:
                        data = typestore.serialize_cdr(string_cls(data=entry.label), LABEL_TYPE)
                        writer.write(label_conn, t_ns, data)
                        stats.labels += 1
                        current = entry.label
                    header = header_cls(
                        stamp=time_cls(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000),
                        frame_id=frame_id,
                    )
                    path = store.path_of(entry)
                    if compressed:
                        blob = path.read_bytes()
                        fmt = "png" if path.suffix.lower() == ".png" else "jpeg"
                        msg = compressed_cls(header=header, format=fmt, data=np.frombuffer(blob, np.uint8))
                    else:
                        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                        if bgr is None:
                            raise BagError(f"cannot decode {path}; run a dataset check and try again")
                        msg = to_rosbags_image(bgr, "bgr8", header, typestore)
                    data = typestore.serialize_cdr(msg, image_type)
                    writer.write(image_conn, t_ns, data)
                    stats.images += 1
                    stats.bytes_written += len(data)
                    if progress is not None:
                        progress(i, len(entries))
            if stats.cancelled:
                return stats
            for part in (tmpdir / bag_path.name).iterdir():
                with open(part, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmpdir / bag_path.name, bag_path)
            fsync_dir(bag_path.parent)
        except (WriterError, OSError) as err:
            raise BagError(f"cannot write bag {bag_path}: {err}; nothing was written") from None
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    finally:
        if own_store:
            store.close()
        stats.seconds = time.perf_counter() - started
    logger.info("wrote %d images and %d labels to %s", stats.images, stats.labels, bag_path)
    return stats
