"""Reading rosbag2 bags with ``rosbags``: opening, topics, message definitions, labels, the robot.

Message definitions: a bag recorded by Jazzy or newer (and every mcap bag) carries its
own definitions, which are used; otherwise the typestore of ``distro`` is (Humble when
neither the caller nor the bag's metadata names one). ``sensor_msgs/Image``,
``sensor_msgs/CompressedImage`` and ``std_msgs/String`` are the same in every ROS 2
distribution, so the choice only matters for bags with unusual definitions.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dli_perception.errors import BagError, ConfigError, ImageConversionError

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
LABEL_TYPE = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGES = ("sqlite3", "mcap")
#: Used when neither the caller nor the bag names a distribution (Humble bags do not).
FALLBACK_DISTRO = "humble"


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


def open_reader(bag_path: Path) -> Any:
    """An opened rosbags reader; :class:`BagError` when the bag is missing or unreadable."""
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
    reader = open_reader(Path(bag_path))
    try:
        return _topic_table(reader)
    finally:
        reader.close()


def _topic_table(reader: Any) -> dict[str, tuple[str, int]]:
    return {name: (info.msgtype or "mixed types", info.msgcount) for name, info in sorted(reader.topics.items())}


def _describe_topics(table: Mapping[str, tuple[str, int]]) -> str:
    if not table:
        return "the bag has no topics"
    return "the bag has: " + ", ".join(f"{t} ({typ}, {n} msgs)" for t, (typ, n) in table.items())


def connections_for(reader: Any, topic: str, allowed: Iterable[str], bag_path: Path) -> list[Any]:
    """The connections of ``topic``; :class:`BagError` naming the bag's topics when it is missing or of another type."""
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


def bag_typestore(reader: Any, connections: list[Any], distro: str | None) -> tuple[Any, str, str]:
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


def read_labels(reader: Any, label_conns: list[Any], typestore: Any) -> tuple[list[int], list[str]]:
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


def header_stamp(msg: Any) -> int:
    """A message header's stamp in ns, 0 when it has none or it is invalid."""
    from dli_perception.core.imaging import stamp_ns

    try:
        return stamp_ns(msg.header)
    except (ImageConversionError, AttributeError):
        return 0
