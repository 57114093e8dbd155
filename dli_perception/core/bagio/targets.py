"""The target of each bag image: a class (label topic or topic map), an XY point, or a label set.

Three kinds of target topic sit beside the image topic:

* ``label``: ``std_msgs/String`` naming the class being shown (``none``/``unknown``/empty: skip);
* ``xy``: ``geometry_msgs/PointStamped`` whose ``point.x``/``point.y`` are the target, **normalised**
  to [-1, 1] (image centre 0, x right, y down; ``z`` is ignored). Pixel coordinates are not accepted:
  a point outside [-1, 1] is an invalid target (its images are skipped and counted);
* ``labels``: ``std_msgs/String`` holding a label set as
  :func:`~dli_perception.core.tasks.parse_label_set` reads it (``cup,ball``, ``["cup"]``; empty: none).

Each image gets the latest target at or before its time. A label or label set (no header) is timed
by its bag timestamp; an XY point by its header stamp when non-zero, else its bag timestamp.
"""

from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING, Any

from dli_perception.core import tasks
from dli_perception.core.dataset import is_no_label, validate_label
from dli_perception.errors import InvalidLabelError, TargetError

if TYPE_CHECKING:
    from dli_perception.core.bagio.stats import BagConversionStats

logger = logging.getLogger(__name__)

XY_TYPE = "geometry_msgs/msg/PointStamped"
"""The message type of an XY target topic."""

KIND_TASK = {"label": tasks.CLASSIFICATION, "xy": tasks.REGRESSION, "labels": tasks.MULTILABEL}
"""The dataset task each kind of target topic gives."""


def read_points(reader: Any, conns: list[Any], typestore: Any) -> tuple[list[int], list[tuple[float, float]]]:
    """All points of an XY topic, sorted by time (header stamp, else bag time; ties keep bag order)."""
    from dli_perception.core.bagio.bags import header_stamp

    points: list[tuple[int, tuple[float, float]]] = []
    for conn, t_bag, raw in reader.messages(conns):
        try:
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            value = (float(msg.point.x), float(msg.point.y))
        except Exception as err:  # noqa: BLE001 - a corrupt target message is skipped, not fatal
            logger.warning("skipping an XY message that does not deserialize: %s", err)
            continue
        stamp = header_stamp(msg)
        points.append((stamp if stamp > 0 else t_bag, value))
    points.sort(key=lambda p: p[0])
    return [t for t, _ in points], [v for _, v in points]


class Targets:
    """The target of each image, as keyword arguments for :meth:`DatasetStore.reserve`, or None (skipped,
    the reason counted in the stats).

    ``kind`` is ``label``, ``xy`` or ``labels``; ``topic_class`` (``{image topic: class}``) replaces the
    timeline for ``label``. ``known`` is the dataset's declared label vocabulary, if any.
    """

    def __init__(
        self,
        kind: str,
        topic_class: dict[str, str] | None,
        times: list[int],
        values: list[Any],
        stats: BagConversionStats,
        known: tuple[str, ...] | None = None,
    ) -> None:
        self.kind, self.topic_class, self.times, self.values, self.stats = kind, topic_class, times, values, stats
        self.known = known
        self._cache: dict[Any, dict[str, Any] | None] = {}

    def target_of(self, topic: str, t_ns: int) -> dict[str, Any] | None:
        if self.topic_class is not None:
            raw: Any = self.topic_class[topic]
        else:
            i = bisect.bisect_right(self.times, t_ns) - 1
            raw = self.values[i] if i >= 0 else None
        if raw is None:
            self.stats.skipped_no_label += 1
            return None
        if raw not in self._cache:
            self._cache[raw] = self._check(raw)
        target = self._cache[raw]
        if target is None:
            if self.kind == "label" and is_no_label(raw):
                self.stats.skipped_unknown += 1
            elif self.kind == "label":
                self.stats.skipped_invalid_label += 1
                self.stats.invalid_labels[raw] = self.stats.invalid_labels.get(raw, 0) + 1
            else:
                text = raw if isinstance(raw, str) else f"({raw[0]:g}, {raw[1]:g})"
                self.stats.skipped_invalid_target += 1
                self.stats.invalid_targets[text] = self.stats.invalid_targets.get(text, 0) + 1
        return target

    def _check(self, raw: Any) -> dict[str, Any] | None:
        """The checked target for a raw value, or None after logging why it cannot be one."""
        try:
            if self.kind == "xy":
                return {"xy": tasks.validate_xy(*raw)}
            if self.kind == "labels":
                return {"labels": tasks.validate_label_set(tasks.parse_label_set(raw), known=self.known)}
            return None if is_no_label(raw) else {"label": validate_label(raw)}
        except TargetError as err:
            hint = " (the XY topic carries normalised coordinates, not pixels)" if self.kind == "xy" else ""
            logger.warning("target %r is not valid: %s%s; its images are skipped", raw, err, hint)
        except InvalidLabelError as err:
            logger.warning("label %r cannot be a class name (%s); its images are skipped", raw, err)
        return None
