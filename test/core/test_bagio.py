"""bag_to_dataset / dataset_to_bag on real rosbag2 bags written with rosbags (sqlite3 and mcap).

Messages are built field by field here (not with the converter under test): raw images in
several encodings (rgb8, bgr8, mono8, big-endian mono16, rgba8, bgra8, padded rows, UYVY,
YUYV, Bayer RGGB) and CompressedImage (PNG, JPEG). Stores use PNG where pixels are compared
exactly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from dli_perception.core import fsutil
from dli_perception.core.bagio import (
    BagConversionStats,
    available_distros,
    bag_to_dataset,
    bag_topics,
    dataset_to_bag,
    typestore_for,
)
from dli_perception.core.dataset import LOCK_NAME, MANIFEST_NAME, DatasetStore
from dli_perception.errors import BagError, ConfigError, InvalidLabelError, TargetError

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000 * 10**9
MS = 1_000_000
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"


def smooth(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def header(ts, stamp_ns: int, frame_id: str = "cam"):
    time_cls = ts.types["builtin_interfaces/msg/Time"]
    return ts.types["std_msgs/msg/Header"](
        stamp=time_cls(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id
    )


def image_msg(ts, pixels: np.ndarray, encoding: str, stamp_ns: int = 0, pad: int = 0, bigendian=False):
    """A sensor_msgs/Image from raw channel data, optionally with padded rows or big-endian words."""
    arr = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = arr.reshape(arr.shape[0], -1).view(np.uint8)
    step = rows.shape[1] + pad
    data = np.zeros((arr.shape[0], step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return ts.types[IMAGE](
        header=header(ts, stamp_ns),
        height=arr.shape[0],
        width=arr.shape[1],
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=data.reshape(-1),
    )


def compressed_msg(ts, data: bytes, fmt: str, stamp_ns: int = 0):
    return ts.types[COMPRESSED](header=header(ts, stamp_ns), format=fmt, data=np.frombuffer(data, np.uint8))


def string_msg(ts, text: str):
    return ts.types[STRING](data=text)


def write_bag(path: Path, ts, storage: str, messages: list[tuple[str, str, int, object]]) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, _, _ in messages:
            if (topic, msgtype) not in conns:
                conns[topic, msgtype] = writer.add_connection(topic, msgtype, typestore=ts)
        for topic, msgtype, t, msg in messages:
            writer.write(conns[topic, msgtype], t, ts.serialize_cdr(msg, msgtype))
    return path


def strip_definitions(bag: Path) -> None:
    """Make a sqlite3 bag look like a Humble recording: no message definitions stored."""
    (db,) = bag.glob("*.db3")
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM message_definitions")


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def mosaic_rggb(rgb: np.ndarray) -> np.ndarray:
    out = np.empty(rgb.shape[:2], np.uint8)
    out[0::2, 0::2] = rgb[0::2, 0::2, 0]
    out[0::2, 1::2] = rgb[0::2, 1::2, 1]
    out[1::2, 0::2] = rgb[1::2, 0::2, 1]
    out[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return out


def yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Pack RGB as 4:2:2 (BT.601 limited range, what OpenCV decodes) in UYVY or YUYV byte order."""
    f = rgb.astype(np.float64)
    y = 16 + (65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]) / 255
    u = 128 + (-37.797 * f[..., 0] - 74.203 * f[..., 1] + 112.0 * f[..., 2]) / 255
    v = 128 + (112.0 * f[..., 0] - 93.786 * f[..., 1] - 18.214 * f[..., 2]) / 255
    u = (u[:, 0::2] + u[:, 1::2]) / 2
    v = (v[:, 0::2] + v[:, 1::2]) / 2
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    out = np.empty((rgb.shape[0], rgb.shape[1], 2), np.uint8)
    if order == "uyvy":
        out[:, 0::2, 0], out[:, 1::2, 0] = u, v
        out[..., 1] = y
    else:
        out[..., 0] = y
        out[:, 0::2, 1], out[:, 1::2, 1] = u, v
    return out


def store_contents(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# ----------------------------------------------------------------------------- label topic


def labelled_bag(tmp_path: Path, storage: str, distro: str):
    """The bag of the label-topic test and, per expected saved image stamp, its expected pixels."""
    from dli_perception.core.imaging import to_rgb8

    ts = typestore_for(distro)
    msgs: list[tuple[str, str, int, object]] = []
    expected: dict[int, tuple[str, np.ndarray, float]] = {}  # stamp -> (class, rgb, tolerance)

    def label(ms: int, text: str) -> None:
        msgs.append(("/teach_label", STRING, T0 + ms * MS, string_msg(ts, text)))

    def image(ms: int, msg, cls: str | None = None, rgb=None, tol: float = 0.0, header_ms=None) -> None:
        if header_ms is not None:
            msg.header = header(ts, T0 + header_ms * MS)
        msgs.append(("/image_raw", IMAGE, T0 + ms * MS, msg))
        if cls is not None:
            stamp = T0 + (header_ms if header_ms is not None else ms) * MS
            expected[stamp] = (cls, rgb, tol)

    rgb = {i: smooth(i) for i in range(20)}
    grey = {i: rgb[i][:, :, 1].copy() for i in range(20)}
    image(0, image_msg(ts, rgb[0], "rgb8"))  # before the first label
    image(1, image_msg(ts, rgb[1][:, :, ::-1], "bgr8"))
    label(10, "cup")
    image(11, image_msg(ts, rgb[1], "rgb8"), "cup", rgb[1])
    image(12, image_msg(ts, rgb[2][:, :, ::-1], "bgr8"), "cup", rgb[2])
    image(13, image_msg(ts, grey[3], "mono8"), "cup", np.dstack([grey[3]] * 3))
    rgba = np.dstack([rgb[4], np.full(rgb[4].shape[:2], 77, np.uint8)])
    image(14, image_msg(ts, rgba, "rgba8"), "cup", rgb[4])
    image(
        15,
        image_msg(ts, grey[5].astype(np.uint16) * 257, "mono16", bigendian=True),
        "cup",
        np.dstack([grey[5]] * 3),
    )
    image(16, image_msg(ts, rgb[6], "rgb8", pad=7), "cup", rgb[6])
    image(17, image_msg(ts, rgb[1], "rgb8"))  # same pixels as at 11: a duplicate
    broken = image_msg(ts, rgb[8], "rgb8")
    broken.data = broken.data[:-50]  # shorter than step * height
    image(18, broken)
    label(20, "none")
    image(21, image_msg(ts, rgb[9], "rgb8"))
    image(22, image_msg(ts, rgb[10], "rgb8"), "cup", rgb[10], header_ms=19)  # taken before "none"
    label(30, "pen")
    for ms, enc in ((31, "yuv422"), (32, "yuyv")):
        msg = image_msg(ts, yuv422(rgb[ms - 20], "uyvy" if enc == "yuv422" else "yuyv"), enc)
        image(ms, msg, "pen", to_rgb8(msg), 0.0)
        assert np.abs(to_rgb8(msg).astype(int) - rgb[ms - 20]).mean() < 8  # the reference is sane
    msg = image_msg(ts, mosaic_rggb(rgb[13]), "bayer_rggb8")
    image(33, msg, "pen", to_rgb8(msg), 0.0)
    assert np.abs(to_rgb8(msg).astype(int) - rgb[13]).mean() < 12
    bgra = np.dstack([rgb[14][:, :, ::-1], np.zeros(rgb[14].shape[:2], np.uint8)])
    image(34, image_msg(ts, bgra, "bgra8"), "pen", rgb[14])
    image(35, image_msg(ts, rgb[15], "rgb8"), header_ms=29)  # taken before "pen": still "none"
    expected.pop(T0 + 29 * MS, None)
    label(40, "   ")
    image(41, image_msg(ts, rgb[16], "rgb8"))
    label(50, "a/b")
    image(51, image_msg(ts, rgb[17], "rgb8"))
    label(60, " cup ")
    image(61, image_msg(ts, rgb[18], "rgb8"), "cup", rgb[18])
    label(70, "pen")
    image(70, image_msg(ts, rgb[19], "rgb8"), "pen", rgb[19])  # same time as the label: at or before
    msgs.sort(key=lambda m: m[2])
    return write_bag(tmp_path / f"bag_{storage}_{distro}", ts, storage, msgs), expected


@pytest.mark.parametrize("distro", ["humble", "kilted"])
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_label_topic_counts_and_pixels(tmp_path, storage, distro):
    bag, expected = labelled_bag(tmp_path, storage, distro)
    seen = []
    with DatasetStore(tmp_path / "ds", image_format="png") as store:
        stats = bag_to_dataset(bag, store, "/image_raw", "/teach_label", progress=lambda d, t: seen.append((d, t)))
        assert stats.counts == {"cup": 8, "pen": 5}
        assert (stats.images, stats.saved, stats.duplicates, stats.skipped_bad) == (21, 13, 1, 1)
        assert (stats.skipped_no_label, stats.skipped_unknown, stats.skipped_invalid_label) == (2, 3, 1)
        assert stats.invalid_labels == {"a/b": 1} and stats.skipped_full == 0
        assert stats.definitions == "bag" and stats.images_per_s > 0 and stats.bytes_read > 0
        assert "cup: 8" in stats.summary()
        assert seen[-1] == (21, 21)
        assert store.counts() == {"cup": 8, "pen": 5}
        entries = store.entries
    assert [e.stamp_ns for e in entries] == sorted(expected)  # manifest in bag order
    for entry in entries:
        cls, rgb, tol = expected[entry.stamp_ns]
        assert entry.label == cls and entry.source == f"{bag.name}:/image_raw"
        stored = read_rgb(tmp_path / "ds" / entry.file)
        np.testing.assert_array_equal(stored, rgb, err_msg=entry.file)
        assert (entry.width, entry.height) == (32, 24)


def test_humble_bag_without_definitions_uses_the_typestore(tmp_path):
    bag, expected = labelled_bag(tmp_path, "sqlite3", "humble")
    strip_definitions(bag)
    with DatasetStore(tmp_path / "ds", image_format="png") as store:
        stats = bag_to_dataset(bag, store, "/image_raw", "/teach_label", workers=0)
        assert (stats.definitions, stats.distro) == ("typestore", "humble")
        assert stats.counts == {"cup": 8, "pen": 5}
    with DatasetStore(tmp_path / "ds2", image_format="png") as store:
        stats = bag_to_dataset(bag, store, "/image_raw", "/teach_label", distro="jazzy")
        assert (stats.definitions, stats.distro) == ("typestore", "jazzy")
        assert stats.counts == {"cup": 8, "pen": 5}


def test_results_do_not_depend_on_worker_count(tmp_path):
    bag, _ = labelled_bag(tmp_path, "sqlite3", "kilted")
    manifests = []
    for workers in (0, 1, 3):
        root = tmp_path / f"ds{workers}"
        with DatasetStore(root) as store:
            bag_to_dataset(bag, store, "/image_raw", "/teach_label", workers=workers)
        manifests.append([(d["file"], d["sha256"]) for d in map(json.loads, (root / MANIFEST_NAME).open())])
    assert manifests[0] == manifests[1] == manifests[2]


# ----------------------------------------------------------------------------- class map, compressed


def test_class_map_with_compressed_images(tmp_path):
    import cv2

    ts = typestore_for("kilted")
    rgb = {i: smooth(100 + i) for i in range(6)}
    png = [cv2.imencode(".png", rgb[i][:, :, ::-1])[1].tobytes() for i in range(2)]
    jpeg = cv2.imencode(".jpg", rgb[2][:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    other_jpeg = cv2.imencode(".jpg", rgb[3][:, :, ::-1])[1].tobytes()
    msgs = [
        ("/cam/cup", COMPRESSED, T0 + 1, compressed_msg(ts, png[0], "png")),
        ("/cam/cup", COMPRESSED, T0 + 2, compressed_msg(ts, png[1], "rgb8; png compressed bgr8")),
        ("/cam/cup", COMPRESSED, T0 + 3, compressed_msg(ts, jpeg, "jpeg")),
        ("/cam/cup", COMPRESSED, T0 + 4, compressed_msg(ts, b"\x89PNG garbage", "png")),
        ("/cam/cup", COMPRESSED, T0 + 5, compressed_msg(ts, other_jpeg[:-400], "jpeg")),  # truncated
        ("/cam/pen", IMAGE, T0 + 6, image_msg(ts, rgb[4], "rgb8")),
        ("/cam/pen", IMAGE, T0 + 7, image_msg(ts, rgb[5][:, :, ::-1], "bgr8", stamp_ns=T0 - 5)),
        ("/other", IMAGE, T0 + 8, image_msg(ts, rgb[0], "rgb8")),
        ("/teach_label", STRING, T0, string_msg(ts, "mug")),
    ]
    bag = write_bag(tmp_path / "bag", ts, "mcap", msgs)
    root = tmp_path / "ds"
    with DatasetStore(root) as store:  # JPEG store: JPEG messages are kept byte for byte
        stats = bag_to_dataset(bag, store, class_map={"/cam/cup": "cup", "/cam/pen": "pen"})
        assert stats.counts == {"cup": 3, "pen": 2}
        assert (stats.images, stats.skipped_bad, stats.skipped_no_label) == (7, 2, 0)
        by_stamp = {e.stamp_ns: e for e in store.entries}
    assert sorted(by_stamp) == [T0 - 5, T0 + 1, T0 + 2, T0 + 3, T0 + 6]
    kept = by_stamp[T0 + 3]
    assert kept.sha256 == fsutil.sha256_bytes(jpeg) and (root / kept.file).read_bytes() == jpeg
    for stamp, src in ((T0 + 1, rgb[0]), (T0 + 2, rgb[1]), (T0 + 6, rgb[4]), (T0 - 5, rgb[5])):
        entry = by_stamp[stamp]
        assert entry.file.endswith(".jpg")
        assert np.abs(read_rgb(root / entry.file).astype(int) - src).mean() < 3, entry.file

    with DatasetStore(tmp_path / "ds_png", image_format="png") as store:  # PNG store: exact pixels
        stats = bag_to_dataset(bag, store, "/cam/cup", class_map={"/cam/cup": "cup"})
        assert stats.counts == {"cup": 3} and stats.skipped_bad == 2
        files = {e.stamp_ns: tmp_path / "ds_png" / e.file for e in store.entries}
    assert files[T0 + 1].read_bytes() == png[0]  # stored unchanged
    np.testing.assert_array_equal(read_rgb(files[T0 + 2]), rgb[1])
    np.testing.assert_array_equal(
        read_rgb(files[T0 + 3]),
        cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB),
    )


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def small_bag(tmp_path):
    ts = typestore_for("kilted")
    msgs = [("/teach_label", STRING, T0, string_msg(ts, "cup"))]
    msgs += [("/image_raw", IMAGE, T0 + i + 1, image_msg(ts, smooth(i), "rgb8")) for i in range(6)]
    return write_bag(tmp_path / "bag", ts, "sqlite3", msgs)


def test_missing_topic_lists_the_bags_topics(tmp_path, small_bag):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        with pytest.raises(BagError) as info:
            bag_to_dataset(small_bag, store, "/camera/image", "/teach_label")
        message = str(info.value)
        assert "'/camera/image' is not in bag" in message
        assert "/image_raw (sensor_msgs/msg/Image, 6 msgs)" in message
        assert "/teach_label (std_msgs/msg/String, 1 msgs)" in message
        with pytest.raises(BagError, match="'/label' is not in bag"):
            bag_to_dataset(small_bag, store, "/image_raw", "/label")
        with pytest.raises(BagError, match="has type sensor_msgs/msg/Image; expected std_msgs/msg/String"):
            bag_to_dataset(small_bag, store, "/image_raw", "/image_raw")
        with pytest.raises(BagError, match="expected sensor_msgs/msg/Image or"):
            bag_to_dataset(small_bag, store, "/teach_label", "/teach_label")
        with pytest.raises(BagError, match="does not exist"):
            bag_to_dataset(tmp_path / "nope", store, "/image_raw", "/teach_label")
        (tmp_path / "notabag").mkdir()
        (tmp_path / "notabag" / "metadata.yaml").write_text("just: text\n")
        with pytest.raises(BagError, match="cannot read bag"):
            bag_to_dataset(tmp_path / "notabag", store, "/image_raw", "/teach_label")
        with pytest.raises(ConfigError):
            bag_to_dataset(small_bag, store, "/image_raw")
        with pytest.raises(ConfigError):
            bag_to_dataset(small_bag, store, "/image_raw", "/teach_label", class_map={"/image_raw": "cup"})
        with pytest.raises(ConfigError, match="no class in class_map"):
            bag_to_dataset(small_bag, store, "/other", class_map={"/image_raw": "cup"})
        for bad in ("none", "../x", ""):
            with pytest.raises(InvalidLabelError):
                bag_to_dataset(small_bag, store, class_map={"/image_raw": bad})
        assert store.counts() == {}
    assert store_contents(root) == [LOCK_NAME]
    assert bag_topics(small_bag) == {"/image_raw": (IMAGE, 6), "/teach_label": (STRING, 1)}


def test_errors_keep_earlier_data(tmp_path, small_bag):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        store.add(smooth(99), "pen")
        with pytest.raises(BagError):
            bag_to_dataset(small_bag, store, "/nope", "/teach_label")
        stats = bag_to_dataset(small_bag, store, "/image_raw", "/teach_label")
        assert stats.counts == {"cup": 6}
        assert store.counts() == {"cup": 6, "pen": 1}


def test_stop_event_cancels_and_keeps_what_was_saved(tmp_path, small_bag):
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == 3:
            stop.set()

    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        stats = bag_to_dataset(small_bag, store, "/image_raw", "/teach_label", progress=progress, stop_event=stop)
        assert stats.cancelled and stats.images == 3 and stats.counts == {"cup": 3}
    with DatasetStore(root) as store:
        assert store.repair_report.clean and store.counts() == {"cup": 3}


def test_write_failure_mid_conversion_loses_nothing_saved(tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes the kernel refuse the 5th image's file mid-write."""
    ts = typestore_for("kilted")
    big = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)  # ~90 kB JPEG
    msgs = [("/teach_label", STRING, T0, string_msg(ts, "cup"))]
    for i in range(10):
        pixels = big if i == 4 else smooth(i)
        msgs.append(("/image_raw", IMAGE, T0 + i + 1, image_msg(ts, pixels, "rgb8")))
    bag = write_bag(tmp_path / "bag", ts, "sqlite3", msgs)
    root = tmp_path / "ds"
    code = """
    import json, resource, signal, sys
    from dli_perception.core.bagio import bag_to_dataset
    from dli_perception.core.dataset import DatasetStore
    from dli_perception.errors import DatasetError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))
    with DatasetStore(sys.argv[2]) as store:
        try:
            bag_to_dataset(sys.argv[1], store, "/image_raw", "/teach_label", workers=int(sys.argv[3]))
        except DatasetError as err:
            print(json.dumps({"error": str(err), "counts": store.counts()}))
    """
    for workers in ("0", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), str(bag), str(root / workers), workers],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert "file size limit" in out["error"]
        assert out["counts"]["cup"] >= 4
        with DatasetStore(root / workers) as store:
            assert store.counts()["cup"] >= 4
            assert not store.repair_report.dropped_missing and not store.repair_report.temp_removed
        lines = [json.loads(line) for line in (root / workers / MANIFEST_NAME).read_text().splitlines()]
        files = {p.relative_to(root / workers).as_posix() for p in (root / workers).glob("cup/*.jpg")}
        assert {d["file"] for d in lines} == files


# ----------------------------------------------------------------------------- dataset -> bag


def make_dataset(root: Path, image_format: str, stamps: list[int] | None = None) -> DatasetStore:
    store = DatasetStore(root, image_format=image_format)
    for i, label in enumerate(["cup", "cup", "pen", "mug", "mug", "cup", "pen"]):
        stamp = stamps[i] if stamps else 0
        store.add(smooth(200 + i, 36, 48), label, stamp_ns=stamp, source="capture")
    return store


@pytest.mark.parametrize(
    ("storage", "compressed", "image_format"),
    [("sqlite3", False, "png"), ("mcap", True, "png"), ("mcap", False, "jpg"), ("sqlite3", True, "jpg")],
)
def test_round_trip(tmp_path, storage, compressed, image_format):
    original = make_dataset(tmp_path / "a", image_format)
    bag = tmp_path / "bag"
    seen = []
    stats = dataset_to_bag(
        original,
        bag,
        storage=storage,
        compressed=compressed,
        distro="humble" if compressed else "kilted",
        start_ns=T0,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert (stats.images, stats.labels, stats.path, seen[-1]) == (7, 5, bag, (7, 7))
    image_type = COMPRESSED if compressed else IMAGE
    assert bag_topics(bag) == {"/image_raw": (image_type, 7), "/teach_label": (STRING, 5)}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    with DatasetStore(tmp_path / "b", image_format=image_format) as copy:
        back = bag_to_dataset(bag, copy, "/image_raw", "/teach_label")
        assert back.counts == original.counts() == {"cup": 3, "mug": 2, "pen": 2}
        assert back.skipped_no_label == 0
        pairs = list(zip(original.entries, copy.entries, strict=True))
    assert len(pairs) == 7
    for i, (a, b) in enumerate(pairs):
        assert a.label == b.label and b.stamp_ns == T0 + i * 33_333_333
        pa, pb = original.path_of(a), tmp_path / "b" / b.file
        if image_format == "png" or compressed:
            np.testing.assert_array_equal(read_rgb(pa), read_rgb(pb))
        else:  # a raw bag of a JPEG dataset: the copy is a second JPEG generation
            assert np.abs(read_rgb(pa).astype(int) - read_rgb(pb)).mean() < 1.5
        if compressed:
            assert a.sha256 == b.sha256  # the very same file bytes
    original.close()


def test_round_trip_keeps_increasing_stamps_and_writes_from_a_path(tmp_path):
    stamps = [T0 + i * 7 * MS for i in range(7)]
    make_dataset(tmp_path / "a", "png", stamps).close()
    bag = tmp_path / "out" / "bag"
    dataset_to_bag(tmp_path / "a", bag, image_topic="/cam", label_topic="/label", storage="mcap")
    with DatasetStore(tmp_path / "b") as copy:
        bag_to_dataset(bag, copy, "/cam", "/label")
        assert [e.stamp_ns for e in copy.entries] == stamps


def test_dataset_to_bag_refusals_and_cancel(tmp_path):
    store = make_dataset(tmp_path / "a", "jpg")
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagError, match="exists already"):
        dataset_to_bag(store, tmp_path / "exists")
    with pytest.raises(ConfigError, match="unknown ROS 2 distribution"):
        dataset_to_bag(store, tmp_path / "bag", distro="rolling-ridley")
    with pytest.raises(ConfigError):
        dataset_to_bag(store, tmp_path / "bag", storage="rosbag1")
    stop = threading.Event()
    stats = dataset_to_bag(
        store, tmp_path / "bag", progress=lambda d, t: stop.set() if d == 2 else None, stop_event=stop
    )
    assert stats.cancelled and stats.images == 2
    assert not (tmp_path / "bag").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "exists"]
    store.close()


def test_distros_and_stats_properties():
    assert {"humble", "jazzy", "kilted"} <= set(available_distros())
    for distro in ("humble", "jazzy", "kilted"):
        assert IMAGE in typestore_for(distro).types
    empty = BagConversionStats()
    assert empty.images_per_s == 0.0 and empty.mb_per_s == 0.0 and "no images saved" in empty.summary()


@pytest.mark.parametrize("distro", ["humble", "jazzy", "kilted"])
def test_each_distros_bag_round_trips_with_and_without_stored_definitions(tmp_path, distro):
    """A bag written with a distribution's definitions reads back from them, and from its typestore alone."""
    original = make_dataset(tmp_path / "a", "png")
    bag = tmp_path / "bag"
    dataset_to_bag(original, bag, storage="sqlite3", distro=distro, start_ns=T0)
    expected = [(e.label, e.sha256) for e in original.entries]
    with DatasetStore(tmp_path / "b", image_format="png") as copy:
        stats = bag_to_dataset(bag, copy, "/image_raw", "/teach_label")
        assert stats.definitions == "bag" and stats.saved == 7
        assert [(e.label, e.sha256) for e in copy.entries] == expected
    strip_definitions(bag)
    with DatasetStore(tmp_path / "c", image_format="png") as copy:
        stats = bag_to_dataset(bag, copy, "/image_raw", "/teach_label", distro=distro)
        assert (stats.definitions, stats.distro, stats.saved) == ("typestore", distro, 7)
        assert [(e.label, e.sha256) for e in copy.entries] == expected
    original.close()


# ----------------------------------------------------------------------------- XY and label-set topics

POINT = "geometry_msgs/msg/PointStamped"


def point_msg(ts, x: float, y: float, stamp_ns: int = 0):
    point = ts.types["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.0)
    return ts.types[POINT](header=header(ts, stamp_ns), point=point)


def test_xy_topic_gives_a_regression_dataset(tmp_path):
    ts = typestore_for("kilted")
    rgb = {i: smooth(300 + i) for i in range(9)}
    msgs = [
        ("/image_raw", IMAGE, T0 + 1 * MS, image_msg(ts, rgb[0], "rgb8")),  # before the first point
        ("/teach_xy", POINT, T0 + 10 * MS, point_msg(ts, 0.25, -0.5)),  # no header stamp: bag time
        ("/image_raw", IMAGE, T0 + 11 * MS, image_msg(ts, rgb[1], "rgb8")),
        ("/image_raw", IMAGE, T0 + 12 * MS, image_msg(ts, rgb[2], "rgb8")),
        # Received late; its header says when it was set: images after T0+20ms get it.
        ("/teach_xy", POINT, T0 + 30 * MS, point_msg(ts, -1.0, 1.0, stamp_ns=T0 + 20 * MS)),
        ("/image_raw", IMAGE, T0 + 21 * MS, image_msg(ts, rgb[3], "rgb8")),
        ("/teach_xy", POINT, T0 + 40 * MS, point_msg(ts, 160.0, 120.0)),  # pixels, not normalised: refused
        ("/image_raw", IMAGE, T0 + 41 * MS, image_msg(ts, rgb[4], "rgb8")),
        ("/image_raw", IMAGE, T0 + 42 * MS, image_msg(ts, rgb[5], "rgb8")),
        ("/teach_xy", POINT, T0 + 50 * MS, point_msg(ts, 0.0, 0.0)),
        ("/image_raw", IMAGE, T0 + 50 * MS, image_msg(ts, rgb[6], "rgb8")),  # same time: at or before
    ]
    msgs.sort(key=lambda m: m[2])
    bag = write_bag(tmp_path / "bag", ts, "mcap", msgs)
    with DatasetStore(tmp_path / "ds", image_format="png") as store:
        stats = bag_to_dataset(bag, store, "/image_raw", xy_topic="/teach_xy")
        assert (stats.images, stats.saved, stats.skipped_no_label, stats.skipped_invalid_target) == (7, 4, 1, 2)
        assert stats.invalid_targets == {"(160, 120)": 2}
        assert stats.counts == {"xy": 4} and stats.task == "regression"
        assert "XY targets:" in stats.summary() and "invalid target 2 ((160, 120))" in stats.summary()
        assert store.task == "regression" and store.counts() == {"xy": 4}
        got = [(e.stamp_ns, e.xy, e.topic, e.bag) for e in store.entries]
        files = [tmp_path / "ds" / e.file for e in store.entries]
    assert got == [
        (T0 + 11 * MS, (0.25, -0.5), "/image_raw", "bag"),
        (T0 + 12 * MS, (0.25, -0.5), "/image_raw", "bag"),
        (T0 + 21 * MS, (-1.0, 1.0), "/image_raw", "bag"),
        (T0 + 50 * MS, (0.0, 0.0), "/image_raw", "bag"),
    ]
    for path, i in zip(files, (1, 2, 3, 6), strict=True):
        np.testing.assert_array_equal(read_rgb(path), rgb[i])


def labels_bag(tmp_path: Path) -> Path:
    ts = typestore_for("humble")
    msgs = []
    plan = [("cup,ball", [0, 1]), ("[]", [2]), ("cup,a/b", [3]), ('["shoe"]', [4]), ("  cup ", [5, 6]), ("", [7])]
    t = T0
    for text, images in plan:
        t += 10 * MS
        msgs.append(("/teach_labels", STRING, t, string_msg(ts, text)))
        for i in images:
            t += MS
            msgs.append(("/image_raw", IMAGE, t, image_msg(ts, smooth(400 + i), "rgb8")))
    return write_bag(tmp_path / "lbag", ts, "sqlite3", msgs)


def test_labels_topic_gives_a_multilabel_dataset(tmp_path):
    bag = labels_bag(tmp_path)
    with DatasetStore(tmp_path / "ds") as store:
        stats = bag_to_dataset(bag, store, "/image_raw", labels_topic="/teach_labels")
        assert (stats.images, stats.saved, stats.skipped_invalid_target) == (8, 7, 1)
        assert stats.invalid_targets == {"cup,a/b": 1}
        assert stats.counts == {"ball": 2, "cup": 4, "shoe": 1}
        assert [e.labels for e in store.entries] == [
            ("ball", "cup"), ("ball", "cup"), (), ("shoe",), ("cup",), ("cup",), (),
        ]  # fmt: skip
        assert store.counts() == {"ball": 2, "cup": 4, "shoe": 1}
    # With a declared vocabulary, a set naming an unknown label is skipped and counted.
    with DatasetStore(tmp_path / "ds2", known_labels=["ball", "cup"]) as store:
        stats = bag_to_dataset(bag, store, "/image_raw", labels_topic="/teach_labels", workers=0)
        assert (stats.saved, stats.skipped_invalid_target) == (6, 2)
        assert stats.invalid_targets == {"cup,a/b": 1, '["shoe"]': 1}
        assert store.counts() == {"ball": 2, "cup": 4}


def test_target_topics_refuse_a_dataset_of_another_task(tmp_path):
    bag = labels_bag(tmp_path)
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        store.add(smooth(1), xy=(0.0, 0.0))
        before = store_contents(root)
        with pytest.raises(TargetError, match="holds a regression task"):
            bag_to_dataset(bag, store, "/image_raw", labels_topic="/teach_labels")
        with pytest.raises(ConfigError, match="exactly one of"):
            bag_to_dataset(bag, store, "/image_raw", "/teach_labels", labels_topic="/teach_labels")
        with pytest.raises(BagError, match="expected geometry_msgs/msg/PointStamped"):
            bag_to_dataset(bag, store, "/image_raw", xy_topic="/teach_labels")
        assert len(store) == 1
    assert store_contents(root) == before


@pytest.mark.parametrize("compressed", [False, True])
def test_regression_and_multilabel_round_trip(tmp_path, compressed):
    from dli_perception.core import synthetic

    synthetic.make_xy_dataset(tmp_path / "xy", 6, size=32, seed=7)
    synthetic.make_multilabel_dataset(tmp_path / "ml", 6, size=32, seed=7)
    for name, kw, topic, msgtype in (
        ("xy", {"xy_topic": "/teach_xy"}, "/teach_xy", POINT),
        ("ml", {"labels_topic": "/teach_labels"}, "/teach_labels", STRING),
    ):
        bag = tmp_path / f"{name}_bag"
        stats = dataset_to_bag(tmp_path / name, bag, compressed=compressed, start_ns=T0)
        assert (stats.images, stats.labels) == (6, 6)
        assert bag_topics(bag)[topic] == (msgtype, 6) and "/teach_label" not in bag_topics(bag)
        with DatasetStore(tmp_path / name, readonly=True) as original:
            want = [(e.xy, e.labels) for e in original.entries]
            want_sha = [e.sha256 for e in original.entries]
        with DatasetStore(tmp_path / f"{name}_back") as copy:
            back = bag_to_dataset(bag, copy, "/image_raw", **kw)
            assert back.saved == 6 and back.skipped_invalid_target == 0
            assert [(e.xy, e.labels) for e in copy.entries] == want
            if compressed:
                assert [e.sha256 for e in copy.entries] == want_sha
