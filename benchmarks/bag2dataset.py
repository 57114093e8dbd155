"""bag2dataset throughput (images/s, MB/s) against a hand-written loop, in the same run.

Writes a rosbag2 bag of N labelled 320x240 synthetic camera frames (a std_msgs/String label topic
switching class every 50 frames), once as sensor_msgs/Image rgb8 and once as
sensor_msgs/CompressedImage JPEG, then converts each bag into a fresh JPEG dataset with
:func:`dli_perception.core.bagio.bag_to_dataset` and with the baseline: what a user writes by hand
(rosbags reader, deserialise, latest label, ``cv2.imencode`` per image, plain ``open().write()``;
compressed frames are decoded with ``cv2.imdecode`` and encoded again). The baseline keeps no
manifest, no hashes, no dedupe and no fsync: it does less work than bag_to_dataset, whose writes
are durable. Each measurement is the median of ``--repeat`` runs, ours and the baseline
alternated. Target: >= 500 images/s.

    .venv/bin/python benchmarks/bag2dataset.py [--n 600] [--size 320x240] [--storage sqlite3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_IMAGES_PER_S = 500.0
CLASSES = ("free", "blocked", "left")
IMAGE_TOPIC, LABEL_TOPIC = "/camera/image_raw", "/teach_label"
PERIOD_NS = 33_333_333
T0 = 1_700_000_000 * 10**9


def write_bag(path: Path, n: int, width: int, height: int, compressed: bool, storage: str) -> int:
    """A bag of ``n`` labelled frames; returns its size in bytes."""
    import cv2
    import numpy as np
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from dli_perception.core.synthetic import SyntheticScenes

    ts = get_typestore(Stores.ROS2_HUMBLE)
    scenes = SyntheticScenes(CLASSES, width, height, seed=1)
    frames = {c: [scenes.render(c, i) for i in range(8)] for c in CLASSES}
    header_cls, time_cls = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    string_cls = ts.types["std_msgs/msg/String"]
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection(IMAGE_TOPIC, msgtype, typestore=ts)
        label_conn = writer.add_connection(LABEL_TOPIC, "std_msgs/msg/String", typestore=ts)
        for i in range(n):
            t = T0 + i * PERIOD_NS
            label = CLASSES[(i // 50) % len(CLASSES)]
            if i % 50 == 0:
                writer.write(label_conn, t, ts.serialize_cdr(string_cls(data=label), "std_msgs/msg/String"))
            rgb = frames[label][i % 8].copy()
            for bit in range(16):  # the frame number in 8x8 black/white squares: every file distinct
                rgb[:8, 8 * bit : 8 * bit + 8] = 255 if (i >> bit) & 1 else 0
            header = header_cls(stamp=time_cls(sec=t // 10**9, nanosec=t % 10**9), frame_id="camera")
            if compressed:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
                assert ok
                msg = ts.types[msgtype](header=header, format="jpeg", data=buf.reshape(-1))
            else:
                msg = ts.types[msgtype](
                    header=header,
                    height=height,
                    width=width,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=width * 3,
                    data=np.ascontiguousarray(rgb).reshape(-1),
                )
            writer.write(image_conn, t, ts.serialize_cdr(msg, msgtype))
    return sum(p.stat().st_size for p in path.iterdir())


def convert_ours(bag: Path, out: Path) -> tuple[int, float]:
    """bag_to_dataset into a fresh JPEG store; returns (images saved, seconds)."""
    from dli_perception.core.bagio import bag_to_dataset
    from dli_perception.core.dataset import DatasetStore

    started = time.perf_counter()
    with DatasetStore(out, image_format="jpg", jpeg_quality=95) as store:
        stats = bag_to_dataset(bag, store, image_topic=IMAGE_TOPIC, label_topic=LABEL_TOPIC)
    return stats.saved, time.perf_counter() - started


def convert_naive(bag: Path, out: Path) -> tuple[int, float]:
    """The loop a user writes by hand; returns (images saved, seconds)."""
    import cv2
    import numpy as np
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    started = time.perf_counter()
    ts = get_typestore(Stores.ROS2_HUMBLE)
    saved = 0
    with Reader(bag) as reader:
        labels = []
        label_conns = [c for c in reader.connections if c.topic == LABEL_TOPIC]
        for conn, t, raw in reader.messages(connections=label_conns):
            labels.append((t, ts.deserialize_cdr(raw, conn.msgtype).data))
        image_conns = [c for c in reader.connections if c.topic == IMAGE_TOPIC]
        for conn, t, raw in reader.messages(connections=image_conns):
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            label = None
            for t_label, value in labels:
                if t_label <= t:
                    label = value
            if label is None or label in ("none", "unknown"):
                continue
            if hasattr(msg, "format"):
                bgr = cv2.imdecode(np.asarray(msg.data), cv2.IMREAD_COLOR)
            else:
                rgb = np.asarray(msg.data).reshape(msg.height, msg.width, 3)
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            class_dir = out / label
            class_dir.mkdir(parents=True, exist_ok=True)
            with open(class_dir / f"{saved:06d}.jpg", "wb") as f:
                f.write(buf.tobytes())
            saved += 1
    return saved, time.perf_counter() - started


def measure(bag: Path, work: Path, repeat: int, n: int) -> tuple[float, float]:
    """Median seconds of ``repeat`` conversions (ours, baseline), alternated so that load from other
    processes hits both alike; each run writes a fresh directory and must save all ``n`` images."""
    times: dict[str, list[float]] = {"ours": [], "naive": []}
    for r in range(repeat):
        for name, convert in (("ours", convert_ours), ("naive", convert_naive)):
            out = work / f"{name}_{r}"
            saved, seconds = convert(bag, out)
            if saved != n:
                raise SystemExit(f"{name} saved {saved} of {n} images")
            times[name].append(seconds)
            shutil.rmtree(out)
    return statistics.median(times["ours"]), statistics.median(times["naive"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="frames per bag")
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--dir", help="working directory (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import cv2  # noqa: F401 - imported before timing

    import dli_perception.core.imaging  # noqa: F401

    work = Path(tempfile.mkdtemp(prefix="bench_bag2dataset_", dir=args.dir))
    results = []
    try:
        for compressed in (False, True):
            kind = "CompressedImage jpeg" if compressed else "Image rgb8"
            bag = work / ("compressed" if compressed else "raw")
            size = write_bag(bag, args.n, width, height, compressed, args.storage)
            convert_ours(bag, work / "warmup")  # first-use costs (typestore, thread pool, imports)
            shutil.rmtree(work / "warmup")
            ours, naive = measure(bag, work, args.repeat, args.n)
            results.append(
                {
                    "messages": kind,
                    "storage": args.storage,
                    "images": args.n,
                    "size": args.size,
                    "bag_mb": round(size / 1e6, 1),
                    "ours_images_per_s": round(args.n / ours, 1),
                    "ours_mb_per_s": round(size / 1e6 / ours, 1),
                    "baseline_images_per_s": round(args.n / naive, 1),
                    "speedup": round(naive / ours, 2),
                    "target_met": args.n / ours >= TARGET_IMAGES_PER_S,
                }
            )
            shutil.rmtree(bag)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"bag2dataset, {args.n} frames {args.size} per bag, {args.storage}, median of {args.repeat} "
        f"(target >= {TARGET_IMAGES_PER_S:g} images/s)"
    )
    print(f"{'messages':<22}{'bag MB':>8}{'ours img/s':>12}{'ours MB/s':>11}{'baseline img/s':>16}{'ratio':>8}  target")
    for r in results:
        print(
            f"{r['messages']:<22}{r['bag_mb']:>8}{r['ours_images_per_s']:>12}{r['ours_mb_per_s']:>11}"
            f"{r['baseline_images_per_s']:>16}{r['speedup']:>7}x  {'met' if r['target_met'] else 'NOT met'}"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
