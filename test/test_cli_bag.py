"""``dli-perception bag2dataset`` / ``dataset2bag`` end to end on real rosbag2 bags written here with rosbags.

Bags are built field by field (not with the converter under test), in both storage formats; the
checks are the exact per-class counts printed and found on disk, pixel-exact images, and one clear
error line with exit code 1 for each user mistake.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from storeutil import manifest

from dli_perception import cli
from dli_perception.commands.bag import parse_class_map
from dli_perception.core import fsutil
from dli_perception.core.dataset import DatasetStore
from dli_perception.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
MODULE = "dli_perception.commands.bag"
IMAGE, COMPRESSED, STRING = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "std_msgs/msg/String"
T0 = 1_700_000_000 * 10**9
MS = 1_000_000


@pytest.fixture
def run(cli_run):
    """The real ``dli-perception`` main with the bag commands registered; returns (rc, stdout, stderr)."""
    assert MODULE in cli.COMMANDS
    return cli_run


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def pixels(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(i)
    return cv2.resize(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


def _header(ts, stamp_ns: int):
    t = ts.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return ts.types["std_msgs/msg/Header"](stamp=t, frame_id="cam")


def raw_msg(ts, rgb: np.ndarray, stamp_ns: int):
    h, w = rgb.shape[:2]
    return ts.types[IMAGE](
        header=_header(ts, stamp_ns),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=rgb.reshape(-1).copy(),
    )


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def compressed_msg(ts, data: bytes, stamp_ns: int):
    return ts.types[COMPRESSED](header=_header(ts, stamp_ns), format="jpeg", data=np.frombuffer(data, np.uint8))


def write_bag(path: Path, storage: str, messages: list[tuple[str, str, int, object]]) -> Path:
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = _typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, t, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))
    return path


# A teaching session: (label or None for an image, index), in time order.
SESSION = [
    ("img", 0),  # before the first label: skipped
    ("label", "cup"),
    ("img", 1),
    ("img", 2),
    ("img", 3),
    ("label", "none"),
    ("img", 4),
    ("img", 5),  # nothing shown: skipped
    ("label", "ball"),
    ("img", 6),
    ("img", 7),
    ("label", "../bad"),
    ("img", 8),  # not a class name: skipped
    ("label", "ball"),
    ("img", 9),
]
SESSION_LABELS = {1: "cup", 2: "cup", 3: "cup", 6: "ball", 7: "ball", 9: "ball"}


def session_bag(path: Path, storage: str) -> Path:
    ts = _typestore()
    messages = []
    for step, (kind, value) in enumerate(SESSION):
        t = T0 + step * 10 * MS
        if kind == "label":
            messages.append(("/teach_label", STRING, t, ts.types[STRING](data=value)))
        else:
            messages.append(("/camera/image_raw", IMAGE, t, raw_msg(ts, pixels(value), t)))
    messages.append(("/odom_note", STRING, T0 + 999 * MS, ts.types[STRING](data="an unrelated topic")))
    return write_bag(path, storage, messages)


def disk_counts(root: Path) -> Counter:
    return Counter(p.parent.name for p in root.glob("*/*") if p.suffix in (".jpg", ".png"))


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dli-perception {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag2dataset_with_a_label_topic_saves_exact_counts_and_pixels(run, tmp_path, storage):
    bag = session_bag(tmp_path / "session", storage)
    out = tmp_path / "ds"
    convert = ("bag2dataset", bag, "--image-topic", "/camera/image_raw", "--label-topic", "/teach_label")
    convert += ("--out", out, "--format", "png")
    rc, stdout, _ = run(*convert)
    assert rc == 0
    assert "per class:\n  ball: 3\n  cup: 3\n" in stdout, stdout
    assert (
        "saved 6 of 10 images; skipped: no label yet 1, label none/unknown 2, invalid label 1, "
        "undecodable 0, class full 0; duplicates 0"
    ) in stdout
    assert "dataset now holds 6 images in 2 classes (ball: 3, cup: 3)" in stdout
    assert disk_counts(out) == Counter({"cup": 3, "ball": 3})
    lines = manifest(out)
    assert len(lines) == 6
    # each image holds exactly the published pixels and its own stamp, in bag order
    for entry, (index, label) in zip(lines, SESSION_LABELS.items(), strict=True):
        assert entry["class"] == label
        stored = cv2.cvtColor(cv2.imread(str(out / entry["file"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(stored, pixels(index))
        step = next(i for i, s in enumerate(SESSION) if s == ("img", index))
        assert entry["stamp_ns"] == T0 + step * 10 * MS
        assert entry["source"] == "session:/camera/image_raw"
    # converting the same bag again adds nothing: every image is a duplicate
    rc, stdout, _ = run(*convert)
    assert rc == 0 and "duplicates 6" in stdout and "(no images saved)" in stdout
    assert disk_counts(out) == Counter({"cup": 3, "ball": 3})


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag2dataset_with_a_class_map_over_raw_and_compressed_topics(run, tmp_path, storage):
    ts = _typestore()
    jpegs = {i: jpeg_bytes(pixels(i)) for i in range(20, 23)}
    messages = [("/left/image_raw", IMAGE, T0 + i * MS, raw_msg(ts, pixels(i), T0 + i * MS)) for i in range(10, 14)]
    messages += [
        ("/right/compressed", COMPRESSED, T0 + i * MS, compressed_msg(ts, jpegs[i], T0 + i * MS)) for i in jpegs
    ]
    bag = write_bag(tmp_path / "two_cams", storage, sorted(messages, key=lambda m: m[2]))
    out = tmp_path / "ds"
    rc, stdout, _ = run("bag2dataset", bag, "--class-map", "/left/image_raw:cup, /right/compressed:ball", "--out", out)
    assert rc == 0
    assert "per class:\n  ball: 3\n  cup: 4\n" in stdout, stdout
    assert "saved 7 of 7 images" in stdout
    assert disk_counts(out) == Counter({"cup": 4, "ball": 3})
    # JPEG messages are stored byte for byte (no second JPEG generation)
    stored = {fsutil.sha256_file(p) for p in (out / "ball").iterdir()}
    assert stored == {fsutil.sha256_bytes(b) for b in jpegs.values()}
    # only one of the topics, and a class map line that names it
    rc, stdout, _ = run("bag2dataset", bag, "--class-map", "/right/compressed:mug", "--out", tmp_path / "ds2")
    assert rc == 0 and "per class:\n  mug: 3\n" in stdout
    assert disk_counts(tmp_path / "ds2") == Counter({"mug": 3})


@pytest.mark.parametrize("storage, compressed", [("mcap", True), ("sqlite3", False)])
def test_dataset2bag_and_back_gives_the_same_dataset(run, tmp_path, storage, compressed):
    bag = session_bag(tmp_path / "session", "sqlite3")
    first = tmp_path / "first"
    assert (
        run(
            "bag2dataset",
            bag,
            "--image-topic",
            "/camera/image_raw",
            "--label-topic",
            "/teach_label",
            "--out",
            first,
            "--format",
            "png",
        )[0]
        == 0
    )
    command = "dataset2bag" if compressed else "record-bag"
    args = [command, first, "--out", tmp_path / "again", "--storage", storage] + (
        ["--compressed"] if compressed else []
    )
    rc, stdout, _ = run(*args)
    assert rc == 0
    kind = "CompressedImage" if compressed else "Image"
    assert (
        f"wrote {tmp_path / 'again'} ({storage}): 6 images ({kind}) on /image_raw, 2 labels on /teach_label" in stdout
    )
    second = tmp_path / "second"
    rc, stdout, _ = run(
        "bag2dataset",
        tmp_path / "again",
        "--image-topic",
        "/image_raw",
        "--label-topic",
        "/teach_label",
        "--out",
        second,
        "--format",
        "png",
    )
    assert rc == 0 and "per class:\n  ball: 3\n  cup: 3\n" in stdout and "saved 6 of 6 images" in stdout
    a, b = manifest(first), manifest(second)
    assert [(e["class"], e["stamp_ns"]) for e in a] == [(e["class"], e["stamp_ns"]) for e in b]
    for ea, eb in zip(a, b, strict=True):
        np.testing.assert_array_equal(cv2.imread(str(first / ea["file"])), cv2.imread(str(second / eb["file"])))


def test_missing_topic_lists_the_bags_topics_and_creates_nothing(run, tmp_path):
    bag = session_bag(tmp_path / "session", "mcap")
    out = tmp_path / "ds"
    rc, _, err = run(
        "bag2dataset", bag, "--image-topic", "/camera/image", "--label-topic", "/teach_label", "--out", out
    )
    assert rc == 1
    line = one_error_line(err, "bag2dataset")
    assert "topic '/camera/image' is not in bag" in line
    assert "/camera/image_raw (sensor_msgs/msg/Image, 10 msgs)" in line
    assert "/teach_label (std_msgs/msg/String, 5 msgs)" in line
    assert not out.exists()
    # a label topic of the wrong type
    rc, _, err = run(
        "bag2dataset",
        bag,
        "--image-topic",
        "/camera/image_raw",
        "--label-topic",
        "/camera/image_raw",
        "--out",
        out,
    )
    assert rc == 1 and "has type sensor_msgs/msg/Image; expected std_msgs/msg/String" in one_error_line(
        err, "bag2dataset"
    )
    assert not out.exists()


def test_nonexistent_bag_is_one_clear_line(run, tmp_path):
    rc, _, err = run(
        "bag2dataset",
        tmp_path / "nope",
        "--image-topic",
        "/a",
        "--label-topic",
        "/b",
        "--out",
        tmp_path / "ds",
    )
    assert rc == 1
    assert "does not exist" in one_error_line(err, "bag2dataset")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    "class_map, expected",
    [
        ("/left", "bad --class-map entry '/left'"),
        ("/left:", "bad --class-map entry '/left:'"),
        (":cup", "bad --class-map entry ':cup'"),
        ("/a:cup,,/b:ball", "bad --class-map entry ''"),
        ("/a:cup,/a:ball", "names topic '/a' twice"),
        ("/camera/image_raw:../x", "contains a path separator"),
    ],
)
def test_bad_class_map_is_one_clear_line(run, tmp_path, class_map, expected):
    bag = session_bag(tmp_path / "session", "sqlite3")
    rc, _, err = run("bag2dataset", bag, "--class-map", class_map, "--out", tmp_path / "ds")
    assert rc == 1
    assert expected in one_error_line(err, "bag2dataset")
    assert not (tmp_path / "ds").exists()


def test_parse_class_map_splits_at_the_first_colon():
    assert parse_class_map("/a:cup, /b/c:x:y") == {"/a": "cup", "/b/c": "x:y"}
    with pytest.raises(ConfigError, match="TOPIC:CLASS"):
        parse_class_map("")


def test_other_usage_errors_are_one_clear_line(run, tmp_path):
    bag = session_bag(tmp_path / "session", "sqlite3")
    rc, _, err = run("bag2dataset", bag, "--label-topic", "/teach_label", "--out", tmp_path / "ds")
    assert rc == 1 and "--label-topic needs --image-topic" in one_error_line(err, "bag2dataset")
    rc, _, err = run("dataset2bag", tmp_path / "no_dataset", "--out", tmp_path / "b")
    assert rc == 1 and "does not exist" in one_error_line(err, "dataset2bag")
    with DatasetStore(tmp_path / "empty"):
        pass
    rc, _, err = run("dataset2bag", tmp_path / "empty", "--out", tmp_path / "b")
    assert rc == 1 and "has no images" in one_error_line(err, "dataset2bag")
    rc, _, err = run("dataset2bag", tmp_path / "empty", "--out", bag)
    assert rc == 1 and "exists already" in one_error_line(err, "dataset2bag")
    assert not (tmp_path / "b").exists()


def test_ctrl_c_stops_bag2dataset_with_partial_stats_and_a_consistent_dataset(tmp_path):
    ts = _typestore()
    n = 3000
    frames = [pixels(i % 50, 48, 64) for i in range(50)]
    messages = [("/teach_label", STRING, T0, ts.types[STRING](data="cup"))]
    for i in range(n):
        rgb = frames[i % 50].copy()
        rgb[0, 0] = (i % 256, i // 256, 7)  # every image distinct: no duplicates
        messages.append(("/cam", IMAGE, T0 + (i + 1) * MS, raw_msg(ts, rgb, T0 + (i + 1) * MS)))
    bag = write_bag(tmp_path / "long", "sqlite3", messages)
    out = tmp_path / "ds"
    code = "import sys; from dli_perception import cli; sys.exit(cli.main())"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "bag2dataset",
            str(bag),
            "--image-topic",
            "/cam",
            "--label-topic",
            "/teach_label",
            "--out",
            str(out),
            "--format",
            "png",
            "--workers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "cup").is_dir() or len(list((out / "cup").iterdir())) < 20:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: the images saved so far are kept" in stderr
    assert "(cancelled)" in stdout
    saved = int(stdout.split("\n  cup: ")[1].split()[0])
    assert 20 <= saved < n
    assert f"dataset now holds {saved} images in 1 class" in stdout
    with DatasetStore(out) as store:
        assert store.repair_report.clean, store.repair_report.summary()
        assert store.counts() == {"cup": saved}
    assert len(manifest(out)) == saved == sum(disk_counts(out).values())


def test_bag2dataset_over_a_fleet_folder_records_provenance_per_image(run, tmp_path):
    """Two robots' bags under bags/<robot>/<bag>: one command, one dataset, robot/bag/topic/stamp per image."""
    ts = _typestore()
    fleet = tmp_path / "bags"
    for robot, first in (("jetbot1", 0), ("jetbot2", 10)):
        (fleet / robot).mkdir(parents=True)
        messages = [
            ("/cam", IMAGE, T0 + (first + k) * MS, raw_msg(ts, pixels(first + k), T0 + (first + k) * MS))
            for k in range(3)
        ]
        write_bag(fleet / robot / f"session_{robot}", "mcap", messages)
    out = tmp_path / "ds"
    rc, stdout, err = run("bag2dataset", fleet, "--class-map", "/cam:cup", "--out", out)
    assert rc == 0, err
    assert "bag2dataset (2 bags)" in err
    assert stdout.count("(robot jetbot1)") == 1 and stdout.count("(robot jetbot2)") == 1
    lines = manifest(out)
    assert len(lines) == 6
    got = sorted((e["robot"], e["bag"], e["topic"], e["stamp_ns"]) for e in lines)
    assert got == sorted(
        [("jetbot1", "session_jetbot1", "/cam", T0 + k * MS) for k in range(3)]
        + [("jetbot2", "session_jetbot2", "/cam", T0 + (10 + k) * MS) for k in range(3)]
    )
    # Several bags named directly, with the robot given; a bad bag among them stops everything before a write.
    out2 = tmp_path / "ds2"
    bags = [fleet / "jetbot1" / "session_jetbot1", fleet / "jetbot2" / "session_jetbot2"]
    rc, _, err = run("bag2dataset", *bags, tmp_path / "missing", "--class-map", "/cam:cup", "--out", out2)
    assert rc == 1 and "does not exist" in one_error_line(err, "bag2dataset") and not out2.exists()
    rc, _, err = run("bag2dataset", *bags, "--class-map", "/cam:cup", "--out", out2, "--robot", "lab")
    assert rc == 0, err
    assert {e["robot"] for e in manifest(out2)} == {"lab"}
    rc, _, err = run("bag2dataset", fleet, bags[0], "--class-map", "/cam:cup", "--out", tmp_path / "ds3")
    assert rc == 1 and "named twice" in one_error_line(err, "bag2dataset")


def test_robot_name_comes_from_the_bags_custom_data_before_its_folder(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dli_perception.core.bagio import robot_name

    ts = _typestore()
    (tmp_path / "shelf").mkdir()
    with Writer(tmp_path / "shelf" / "b", version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as w:
        w.set_custom_data("robot", "jetbot7")
        conn = w.add_connection("/cam", IMAGE, typestore=ts)
        w.write(conn, T0, ts.serialize_cdr(raw_msg(ts, pixels(0), T0), IMAGE))
    assert robot_name(tmp_path / "shelf" / "b") == "jetbot7"
    plain = session_bag(tmp_path / "jetbot3" / "session", "sqlite3")
    assert robot_name(plain) == "jetbot3"


# -------------------------------------------------------------------------- XY and label-set topics

POINT = "geometry_msgs/msg/PointStamped"


def point_msg(ts, x: float, y: float, stamp_ns: int):
    point = ts.types["geometry_msgs/msg/Point"](x=x, y=y, z=0.0)
    return ts.types[POINT](header=_header(ts, stamp_ns), point=point)


def test_bag2dataset_xy_topic_over_a_fleet_keeps_targets_and_provenance(run, tmp_path):
    ts = _typestore()
    fleet = tmp_path / "bags"
    want = []
    for robot, first in (("jetbot1", 0), ("jetbot2", 10)):
        messages = []
        for k in range(3):
            t = T0 + (first + k) * 10 * MS
            xy = (round(-0.9 + 0.1 * (first + k), 3), round(0.5 - 0.05 * k, 3))
            messages.append(("/teach_xy", POINT, t, point_msg(ts, *xy, t)))
            messages.append(("/cam", IMAGE, t + MS, raw_msg(ts, pixels(first + k), t + MS)))
            want.append((robot, f"session_{robot}", t + MS, xy))
        messages.append(("/teach_xy", POINT, T0 + 999 * MS, point_msg(ts, 2.0, 0.0, 0)))  # after the last image
        write_bag(fleet / robot / f"session_{robot}", "sqlite3", messages)
    out = tmp_path / "ds"
    rc, stdout, err = run("bag2dataset", fleet, "--image-topic", "/cam", "--xy-topic", "/teach_xy", "--out", out)
    assert rc == 0, err
    assert "XY targets:\n  xy: 3\n" in stdout
    assert "dataset now holds 6 regression images (XY targets) (xy: 6)" in stdout
    got = sorted((e["robot"], e["bag"], e["stamp_ns"], tuple(e["xy"])) for e in manifest(out))
    assert got == sorted(want)
    assert {e["class"] for e in manifest(out)} == {"xy"} and disk_counts(out) == Counter({"xy": 6})

    # Back to a bag and again into a dataset: the same targets.
    bag = tmp_path / "back"
    rc, stdout, err = run("dataset2bag", out, "--out", bag, "--compressed")
    assert rc == 0, err
    assert "6 XY targets on /teach_xy" in stdout
    out2 = tmp_path / "ds2"
    rc, _, err = run("bag2dataset", bag, "--image-topic", "/image_raw", "--xy-topic", "/teach_xy", "--out", out2)
    assert rc == 0, err
    assert [(e["xy"], e["sha256"]) for e in manifest(out2)] == [(e["xy"], e["sha256"]) for e in manifest(out)]

    # A classification dataset refuses XY images: one clear line, nothing written.
    cls = tmp_path / "cls"
    with DatasetStore(cls) as store:
        store.add(pixels(50), "cup")
    rc, _, err = run("bag2dataset", fleet, "--image-topic", "/cam", "--xy-topic", "/teach_xy", "--out", cls)
    assert rc == 1 and "holds a classification task; these topics give regression" in one_error_line(err, "bag2dataset")
    assert len(manifest(cls)) == 1
    # The wrong type for --xy-topic: one clear line, no dataset.
    rc, _, err = run("bag2dataset", fleet, "--image-topic", "/cam", "--xy-topic", "/cam", "--out", tmp_path / "n")
    assert rc == 1 and "expected geometry_msgs/msg/PointStamped" in one_error_line(err, "bag2dataset")
    assert not (tmp_path / "n").exists()


def test_bag2dataset_labels_topic_with_known_labels(run, tmp_path):
    ts = _typestore()
    messages = []
    plan = [("cup,ball", 2), ("shoe", 1), ("", 1), ('["ball"]', 2)]
    t = T0
    i = 0
    for text, n in plan:
        t += 10 * MS
        messages.append(("/teach_labels", STRING, t, ts.types[STRING](data=text)))
        for _ in range(n):
            t += MS
            messages.append(("/cam", IMAGE, t, raw_msg(ts, pixels(100 + i), t)))
            i += 1
    bag = write_bag(tmp_path / "bag", "mcap", messages)
    out = tmp_path / "ds"
    args = ("bag2dataset", bag, "--image-topic", "/cam", "--labels-topic", "/teach_labels", "--out", out)
    rc, stdout, err = run(*args, "--known-labels", "cup,ball")
    assert rc == 0, err
    assert "per label:\n  ball: 4\n  cup: 2\n" in stdout
    assert "invalid target 1 (shoe)" in stdout
    assert "dataset now holds 5 multi-label images, 2 labels in use (ball: 4, cup: 2)" in stdout
    assert (out / "labels.txt").read_text() == "ball\ncup\n"
    assert [e["labels"] for e in manifest(out)] == [["ball", "cup"], ["ball", "cup"], [], ["ball"], ["ball"]]
    rc, _, err = run("bag2dataset", bag, "--image-topic", "/cam", "--label-topic", "/cam", "--known-labels", "a",
                     "--out", tmp_path / "x")  # fmt: skip
    assert rc == 1 and "--known-labels" in one_error_line(err, "bag2dataset")
