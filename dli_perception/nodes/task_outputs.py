"""classifier_node's outputs for regression and multi-label models: publishers, parameters, overlay.

The classifier serves a model of any task (``metadata.json`` ``task``); this module holds what the
regression and multi-label tasks add to the node, so the node itself only wires:

* regression: ``xy`` (geometry_msgs/PointStamped, header = the source image's header, ``point.x`` /
  ``point.y`` = the EMA-smoothed target, normalised to [-1, 1] with the image centre 0, x right,
  y down, as the model predicts it (not clipped); ``z`` = 0) and ``~/xy_result`` (std_msgs/String,
  :class:`~dli_perception.core.contracts.XYResult` JSON);
* multilabel: ``labels`` (std_msgs/String, the active labels comma-separated in output order, ""
  for none) and ``~/label_set`` (std_msgs/String, :class:`~dli_perception.core.contracts.LabelSet`
  JSON, stamped with the source header, ``changed`` when the active set changes).

All four publishers exist from the start, whatever the first model's task, so subscribers match
before a model of their task arrives and a hot swap between tasks creates nothing on the worker
thread; only the serving task's topics carry messages.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from std_msgs.msg import String

from dli_perception.core import tasks
from dli_perception.core.live_classifier import LiveResult
from dli_perception.core.task_heads import TaskConfig, check_xy_ema_alpha, parse_label_thresholds
from dli_perception.errors import ConfigError
from dli_perception.nodes.params import Param
from dli_perception.nodes.qos import EVENTS, overridable


def _alpha(value: Any) -> str | None:
    try:
        check_xy_ema_alpha(value)
    except ConfigError as exc:
        return str(exc)
    return None


def _thresholds(value: Any) -> str | None:
    try:
        parse_label_thresholds(value)
    except ConfigError as exc:
        return str(exc)
    return None


PARAMS = [
    Param(
        "xy_ema_alpha",
        1.0,
        "Regression models: weight of the newest frame in the moving average of the XY target (1 = no smoothing, "
        "each point is the model's prediction for its frame; e.g. 0.5 to steady a jittery target).",
        min=0.0,
        max=1.0,
        check=_alpha,
    ),
    Param(
        "label_thresholds",
        "",
        "Multi-label models: per-label score thresholds (0-1, exclusive) replacing the model's own, as "
        "label=threshold pairs, e.g. 'cup=0.4,ball=0.6'; empty: the model's thresholds (0.5 where it has none).",
        check=_thresholds,
    ),
]
NAMES = tuple(p.name for p in PARAMS)


def task_config(values: dict[str, Any]) -> TaskConfig:
    """The :class:`TaskConfig` of the task parameters in ``values``; ConfigError if invalid."""
    return TaskConfig.from_params(values["xy_ema_alpha"], values["label_thresholds"])


def check_against_model(values: dict[str, Any], model: Any) -> SetParametersResult:
    """Refuse ``label_thresholds`` naming labels a serving multi-label model lacks (naming them)."""
    if model is None or model.task != tasks.MULTILABEL:
        return SetParametersResult(successful=True)
    try:
        given = parse_label_thresholds(values["label_thresholds"])
    except ConfigError as exc:
        return SetParametersResult(successful=False, reason=str(exc))
    unknown = sorted(set(given) - set(model.classes))
    if unknown:
        return SetParametersResult(
            successful=False,
            reason=f"label_thresholds name label(s) {unknown} the serving model lacks; its labels are {model.classes}",
        )
    return SetParametersResult(successful=True)


class TaskPublishers:
    """The regression and multi-label publishers of a classifier node, and what they publish."""

    def __init__(self, node: Node) -> None:
        from geometry_msgs.msg import PointStamped

        self._point_type = PointStamped
        self.xy_pub = node.create_publisher(PointStamped, "xy", **overridable(node, EVENTS))
        self.xy_result_pub = node.create_publisher(String, "~/xy_result", EVENTS)
        self.labels_pub = node.create_publisher(String, "labels", **overridable(node, EVENTS))
        self.label_set_pub = node.create_publisher(String, "~/label_set", EVENTS)

    def topics(self, task: str) -> str:
        """The topics a model of ``task`` publishes on (for logs)."""
        if task == tasks.REGRESSION:
            return f"{self.xy_pub.topic_name}, {self.xy_result_pub.topic_name}"
        if task == tasks.MULTILABEL:
            return f"{self.labels_pub.topic_name}, {self.label_set_pub.topic_name}"
        return ""

    def publish_point(self, x: float, y: float, header: Any) -> None:
        msg = self._point_type()
        msg.header = header
        msg.point.x, msg.point.y, msg.point.z = float(x), float(y), 0.0
        self.xy_pub.publish(msg)

    def publish_labels(self, active: tuple[str, ...]) -> None:
        self.labels_pub.publish(String(data=",".join(active)))

    def publish_result(self, result: LiveResult) -> None:
        """The full result of a regression or multi-label frame (nothing for classification), encoded only
        while someone subscribes, like the classifier's ``~/scores``."""
        if result.xy is not None:
            if self.xy_result_pub.get_subscription_count() > 0:
                self.xy_result_pub.publish(String(data=result.xy.encode()))
        elif result.label_set is not None and self.label_set_pub.get_subscription_count() > 0:
            self.label_set_pub.publish(String(data=result.label_set.encode()))


def draw(result: LiveResult):
    """The overlay frame of a regression or multi-label result (RGB uint8)."""
    from dli_perception.core.overlay import draw_labels_overlay, draw_xy_overlay

    if result.xy is not None:
        xy = result.xy
        return draw_xy_overlay(result.rgb, xy.x, xy.y, raw=(xy.raw_x, xy.raw_y))
    ls = result.label_set
    return draw_labels_overlay(result.rgb, ls.labels, ls.scores, ls.thresholds)
