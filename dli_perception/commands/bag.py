"""``dli-perception bag2dataset`` and ``dataset2bag`` (alias ``record-bag``): rosbag2 bags <-> datasets.

No ROS install is needed: bags are read and written with the ``rosbags`` library (sqlite3 and
mcap). Ctrl-C stops a conversion cleanly: ``bag2dataset`` keeps (and reports) what was saved so
far, ``dataset2bag`` writes no bag at all. Both exit with 130 then.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dli_perception.commands.progress import ProgressBar
from dli_perception.errors import BagError, ConfigError, TargetError

T = TypeVar("T")

INTERRUPTED = 130
STORAGES = ("sqlite3", "mcap")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
LABEL_TYPE = "std_msgs/msg/String"
XY_TYPE = "geometry_msgs/msg/PointStamped"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bag2dataset",
        help="save the images of rosbag2 bags into a labelled dataset",
        description="Save the images of one or many rosbag2 bags (sqlite3 or mcap) into a dataset (ImageFolder "
        "layout + manifest). Each image gets the latest label of --label-topic at or before its stamp (images "
        "before the first label or under none/unknown are skipped and counted), or the class its topic "
        "has in --class-map. For a regression dataset give --xy-topic (geometry_msgs/PointStamped, point.x/.y "
        "normalised to [-1, 1], not pixels), for a multi-label one --labels-topic (std_msgs/String label sets "
        'such as cup,ball or ["cup"]; empty: none); they are matched to images the same way. A folder '
        "without metadata.yaml stands for every bag below it (a fleet layout bags/<robot>/<bag>). Each "
        "image's robot, bag, topic and stamp go into the manifest.",
    )
    p.add_argument(
        "bags",
        nargs="+",
        metavar="BAG",
        help="bag directory (the one holding metadata.yaml), or a folder of bags; several may be given",
    )
    p.add_argument(
        "--robot",
        help="robot name recorded with every image (default: the bag's custom_data robot, else the name of "
        "the folder holding the bag)",
    )
    p.add_argument(
        "--image-topic",
        help="sensor_msgs/Image or CompressedImage topic (required with --label-topic, --xy-topic, --labels-topic)",
    )
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--label-topic", help="std_msgs/String topic naming the class being shown")
    labels.add_argument(
        "--class-map",
        metavar="TOPIC:CLASS[,TOPIC:CLASS...]",
        help="one class per image topic, e.g. /left:cup,/right:ball",
    )
    labels.add_argument(
        "--xy-topic",
        help="geometry_msgs/PointStamped topic of XY targets normalised to [-1, 1] (a regression dataset)",
    )
    labels.add_argument("--labels-topic", help="std_msgs/String topic of label sets (a multi-label dataset)")
    p.add_argument(
        "--known-labels",
        metavar="LABEL[,LABEL...]",
        help="with --labels-topic: declare the dataset's labels (labels.txt); sets naming others are skipped",
    )
    p.add_argument("--out", required=True, help="dataset directory (created if needed; images are added to it)")
    p.add_argument("--distro", help="message definitions for bags that carry none: humble, jazzy, kilted, ...")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image file format (default: jpg)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1-100 (default: 95)")
    p.add_argument("--max-per-class", type=int, help="keep at most this many images per class")
    p.add_argument("--no-dedupe", action="store_true", help="keep images identical to one already stored")
    p.add_argument("--workers", type=int, help="decode/encode threads (default: up to 4)")
    p.set_defaults(func=run_bag2dataset)

    p = sub.add_parser(
        "dataset2bag",
        aliases=["record-bag"],
        help="write a dataset as a rosbag2 bag (images + labels)",
        description="Write a dataset as a rosbag2 bag that bag2dataset turns back into the same dataset: "
        "images on --image-topic in capture order, a std_msgs/String on --label-topic at each change "
        "of class; for a regression dataset each image's target as a geometry_msgs/PointStamped on --xy-topic, "
        "for a multi-label one its label set as a std_msgs/String on --labels-topic.",
    )
    p.add_argument("dataset", help="dataset directory")
    p.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--storage", choices=STORAGES, default="sqlite3", help="bag storage (default: sqlite3)")
    p.add_argument(
        "--compressed",
        action="store_true",
        help="sensor_msgs/CompressedImage with the stored files' bytes (default: raw bgr8 Image)",
    )
    p.add_argument("--distro", default="kilted", help="message definitions written into the bag (default: kilted)")
    p.add_argument("--image-topic", default="/image_raw", help="image topic (default: /image_raw)")
    p.add_argument("--label-topic", default="/teach_label", help="label topic (default: /teach_label)")
    p.add_argument(
        "--xy-topic", default="/teach_xy", help="XY target topic of a regression dataset (default: /teach_xy)"
    )
    p.add_argument(
        "--labels-topic",
        default="/teach_labels",
        help="label-set topic of a multi-label dataset (default: /teach_labels)",
    )
    p.add_argument("--frame-id", default="camera", help="frame_id of the image headers (default: camera)")
    p.add_argument(
        "--period-ms",
        type=float,
        default=1000.0 / 30,
        help="time between images when the dataset has no stamps, ms",
    )
    p.set_defaults(func=run_dataset2bag)


def parse_class_map(text: str) -> dict[str, str]:
    """``"/a:cup,/b:ball"`` -> ``{"/a": "cup", "/b": "ball"}``; :class:`ConfigError` on bad syntax.

    A topic name cannot contain ``:``, so each entry is split at its first colon.
    """
    usage = "use --class-map TOPIC:CLASS[,TOPIC:CLASS...], e.g. /left/image_raw:cup,/right/image_raw:ball"
    result: dict[str, str] = {}
    for raw in text.split(","):
        entry = raw.strip()
        topic, sep, label = entry.partition(":")
        topic, label = topic.strip(), label.strip()
        if not sep or not topic or not label:
            raise ConfigError(f"bad --class-map entry {entry!r}: {usage}")
        if topic in result:
            raise ConfigError(f"--class-map names topic {topic!r} twice; give each topic one class")
        result[topic] = label
    return result


def _describe(topics: dict[str, tuple[str, int]]) -> str:
    if not topics:
        return "the bag has no topics"
    return "the bag has: " + ", ".join(f"{t} ({typ}, {n} msgs)" for t, (typ, n) in topics.items())


def _check_topic(bag: str, topics: dict[str, tuple[str, int]], topic: str, allowed: tuple[str, ...]) -> None:
    if topic not in topics:
        raise BagError(f"topic {topic!r} is not in bag {bag}; {_describe(topics)}")
    msgtype = topics[topic][0]
    if msgtype not in allowed:
        raise BagError(f"topic {topic!r} in bag {bag} has type {msgtype}; expected {' or '.join(allowed)}")


def _run_interruptible(work: Callable[[threading.Event], T], stop: threading.Event) -> tuple[T | None, bool]:
    """Run ``work(stop)`` on a thread; Ctrl-C sets ``stop`` and waits for it to return.

    Returns ``(result, interrupted)``; an exception of ``work`` is re-raised here.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = work(stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    # Waiting on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave the
    # thread wrongly marked as finished on some Python versions.
    threading.Thread(target=target, name="conversion", daemon=True).start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(timeout=0.2)
        except KeyboardInterrupt:
            if not interrupted:
                print("\ninterrupted: stopping after the images in flight ...", file=sys.stderr)
            interrupted = True
            stop.set()
    if "error" in box:
        raise box["error"]
    return box.get("result"), interrupted


def find_bags(path: str | Path) -> list[Path]:
    """``path`` when it is a bag (holds metadata.yaml), else every bag below it (sorted); a missing path is
    returned as is so that reading it reports it."""
    root = Path(path)
    if (root / "metadata.yaml").is_file() or not root.is_dir():
        return [root]
    bags = sorted(p.parent for p in root.rglob("metadata.yaml"))
    if not bags:
        raise BagError(f"{root} is neither a bag (no metadata.yaml) nor a folder holding bags")
    return bags


def _check_bag(bag: Path, args: argparse.Namespace, class_map: dict[str, str] | None) -> dict[str, tuple[str, int]]:
    """The bag's topics after checking the ones the options name; raises BagError/ConfigError."""
    from dli_perception.core.bagio import bag_topics

    topics = bag_topics(bag)  # BagError for a missing or unreadable bag, before anything is created
    if class_map is not None:
        for topic in class_map:
            _check_topic(str(bag), topics, topic, IMAGE_TYPES)
        if args.image_topic and args.image_topic not in class_map:
            raise ConfigError(f"--image-topic {args.image_topic} has no class in --class-map; add it or leave it out")
    else:
        _check_topic(str(bag), topics, args.image_topic, IMAGE_TYPES)
        if args.xy_topic is not None:
            _check_topic(str(bag), topics, args.xy_topic, (XY_TYPE,))
        else:
            _check_topic(str(bag), topics, args.labels_topic or args.label_topic, (LABEL_TYPE,))
    return topics


def run_bag2dataset(args: argparse.Namespace) -> int:
    from dli_perception.core.bagio import bag_to_dataset
    from dli_perception.core.dataset import DatasetStore, validate_label

    class_map = parse_class_map(args.class_map) if args.class_map is not None else None
    if class_map is not None:
        class_map = {topic: validate_label(label) for topic, label in class_map.items()}
    if class_map is None and not args.image_topic:
        given = "--xy-topic" if args.xy_topic else "--labels-topic" if args.labels_topic else "--label-topic"
        raise ConfigError(f"{given} needs --image-topic (the images it labels)")
    known_labels = None
    if args.known_labels is not None:
        if args.labels_topic is None:
            raise ConfigError("--known-labels declares multi-label labels; use it with --labels-topic")
        from dli_perception.core.tasks import parse_label_set

        known_labels = parse_label_set(args.known_labels)
    bags = [bag for given in args.bags for bag in find_bags(given)]
    if len({b.resolve() for b in bags}) != len(bags):
        raise ConfigError("a bag is named twice (directly or inside a folder given); name each once")
    image_topics = list(class_map) if class_map is not None else [args.image_topic]
    totals = []
    for bag in bags:  # every bag is checked before the dataset is created or touched
        topics = _check_bag(bag, args, class_map)
        totals.append(sum(topics[t][1] for t in image_topics if t in topics))

    results = []
    with DatasetStore(
        args.out,
        max_per_class=args.max_per_class,
        jpeg_quality=args.jpeg_quality,
        dedupe=not args.no_dedupe,
        image_format=args.format,
        known_labels=known_labels,
    ) as store:
        wanted = "regression" if args.xy_topic else "multilabel" if args.labels_topic else "classification"
        if store.task not in (None, wanted):
            raise TargetError(
                f"dataset {store.root} holds a {store.task} task; these topics give {wanted} images "
                "(one task per dataset): choose another --out; nothing was read"
            )
        desc = "bag2dataset" if len(bags) == 1 else f"bag2dataset ({len(bags)} bags)"
        with ProgressBar(sum(totals), desc, unit="img") as bar:

            def work(stop: threading.Event):
                offset = 0
                for bag, total in zip(bags, totals, strict=True):
                    if stop.is_set():
                        break

                    def progress(done: int, _total: int, offset: int = offset) -> None:
                        bar.update_to(offset + done, sum(totals))

                    stats = bag_to_dataset(
                        bag,
                        store,
                        image_topic=args.image_topic,
                        label_topic=args.label_topic,
                        class_map=class_map,
                        progress=progress,
                        stop_event=stop,
                        distro=args.distro,
                        workers=args.workers,
                        robot=args.robot,
                        xy_topic=args.xy_topic,
                        labels_topic=args.labels_topic,
                    )
                    results.append((bag, stats))
                    offset += total

            _, interrupted = _run_interruptible(work, threading.Event())
        counts = store.counts()
        root, task, n_images = store.root, store.task, len(store)
    for bag, stats in results:
        print(f"{bag} -> {root} (robot {stats.robot})")
        print(stats.summary())
    listed = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "empty"
    if task in ("regression", "multilabel"):
        from dli_perception.core.dataset.targets import describe

        print(f"dataset now holds {describe(task, n_images, counts)} ({listed})")
    else:
        classes = "class" if len(counts) == 1 else "classes"
        print(f"dataset now holds {sum(counts.values())} images in {len(counts)} {classes} ({listed})")
    if interrupted:
        print("interrupted: the images saved so far are kept and the dataset is consistent", file=sys.stderr)
        return INTERRUPTED
    return 0


def run_dataset2bag(args: argparse.Namespace) -> int:
    from dli_perception.core.bagio import dataset_to_bag
    from dli_perception.core.dataset import DatasetStore

    if args.period_ms <= 0:
        raise ConfigError(f"--period-ms must be > 0, got {args.period_ms}")
    out = Path(args.out)
    if out.exists():
        raise BagError(f"{out} exists already; choose a new bag path (bags are never overwritten)")
    with DatasetStore(args.dataset, readonly=True) as store:
        if not store.repair_report.clean:
            print(f"warning: dataset {store.root}: {store.repair_report.summary()}", file=sys.stderr)
        if len(store) == 0:
            raise BagError(f"dataset {store.root} has no images; nothing to write")
        task = store.task
        with ProgressBar(len(store), "dataset2bag", unit="img") as bar:

            def work(stop: threading.Event):
                return dataset_to_bag(
                    store,
                    out,
                    image_topic=args.image_topic,
                    label_topic=args.label_topic,
                    xy_topic=args.xy_topic,
                    labels_topic=args.labels_topic,
                    storage=args.storage,
                    compressed=args.compressed,
                    distro=args.distro,
                    frame_id=args.frame_id,
                    period_ns=max(1, round(args.period_ms * 1e6)),
                    progress=bar.update_to,
                    stop_event=stop,
                )

            stats, interrupted = _run_interruptible(work, threading.Event())
    if interrupted or stats.cancelled:
        print("interrupted: no bag was written", file=sys.stderr)
        return INTERRUPTED
    kind = "CompressedImage" if args.compressed else "Image"
    targets = {"regression": f"XY targets on {args.xy_topic}", "multilabel": f"label sets on {args.labels_topic}"}
    print(
        f"wrote {out} ({args.storage}): {stats.images} images ({kind}) on {args.image_topic}, "
        f"{stats.labels} {targets.get(task, f'labels on {args.label_topic}')}, {stats.bytes_written / 1e6:.1f} MB "
        f"in {stats.seconds:.1f} s"
    )
    return 0
