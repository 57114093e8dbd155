"""A classifier_node in one private context with a frame/model publisher and collectors for its outputs.

Used by the node tests and the reliability tests alike: frames go out as they are (bad encodings
included), results are read back raw from ``scores``, ``label``, ``classes`` and ``/diagnostics``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from graphutil import DEADLINE_S, DISCOVERY_S, Collector, Spinner, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dli_perception.core.imaging import cv2_to_imgmsg
from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA

RESULT_S = 15.0
"""Deadline for the result of one published frame."""


def frame_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", encoding: str = "rgb8") -> Image:
    """An Image of the RGB pixels ``rgb`` in ``encoding`` (rgb8, bgr8 or rgba8), stamped ``stamp_ns``."""
    if encoding == "bgr8":
        arr = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        arr = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    else:
        arr = rgb
    msg = cv2_to_imgmsg(np.ascontiguousarray(arr), encoding=encoding)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def stamp_of(result: dict) -> int:
    """The source frame's stamp of one scores result, in nanoseconds."""
    return result["stamp"]["sec"] * 1_000_000_000 + result["stamp"]["nanosec"]


def diagnostics_of(collector: Collector, suffix: str) -> dict[str, Any] | None:
    """The newest DiagnosticStatus whose name ends with ``suffix``, as {message, level, key: value}."""
    for array in reversed(list(collector.msgs)):
        for status in array.status:
            if status.name.endswith(suffix):
                return {
                    "message": status.message,
                    "level": status.level,
                    **{kv.key: kv.value for kv in status.values},
                }
    return None


class ClassifierRig:
    """classifier_node + a frame/model publisher + collectors for labels, scores, classes and diagnostics."""

    def __init__(self, context, spinner: Spinner, **params: Any) -> None:
        from dli_perception.nodes.classifier_node import ClassifierNode

        values = {"backend": "onnxruntime", "threads": 1, **params}
        self.spinner = spinner
        self.node = spinner.add(
            ClassifierNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        )
        self.source = spinner.add(Node("frame_source", context=context))
        self.image_pub = self.source.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.model_pub = self.source.create_publisher(String, "model_updated", EVENTS)
        self.labels = spinner.add(Collector(context, String, "label", EVENTS, name="labels"))
        self.scores = spinner.add(Collector(context, String, "/classifier_node/scores", EVENTS, name="scores"))
        self.classes = spinner.add(Collector(context, String, "/classifier_node/classes", LATCHED, name="classes"))
        self.diags = spinner.add(Collector(context, DiagnosticArray, "/diagnostics", EVENTS, name="diags"))
        self.sent = 0
        """Frames published through :meth:`send_and_wait`."""

    def ready(self) -> None:
        """Wait until the node holds a model and every publisher and collector is connected."""
        node = self.node
        assert wait_for(
            lambda: (
                node.model is not None
                and self.image_pub.get_subscription_count() > 0
                and self.model_pub.get_subscription_count() > 0
                and node.label_pub.get_subscription_count() > 0
                and node.scores_pub.get_subscription_count() > 0
            ),
            DISCOVERY_S,
        ), f"classifier not ready: status {node.status()!r}, last error {node.last_error!r}"

    def processed(self) -> int:
        """Frames the worker finished with (classified, refused as bad, or failed)."""
        n = self.node
        return n.classified + n.bad + n.errors

    def send_and_wait(self, msg: Image) -> None:
        """Publish one frame and wait until the node received and processed it (no frame is ever dropped)."""
        self.image_pub.publish(msg)
        self.sent += 1
        n = self.node
        assert wait_for(lambda: n.received == self.sent and self.processed() == self.sent, DEADLINE_S), (
            f"frame {self.sent} not processed: received {n.received}, classified {n.classified}, "
            f"bad {n.bad}, "
            f"errors {n.errors}, dropped {n.dropped}; last error {n.last_error!r}"
        )

    def results(self) -> list[dict]:
        return [json.loads(m.data) for m in list(self.scores.msgs)]

    def result_for(self, stamp_ns: int) -> dict | None:
        for r in reversed(self.results()):
            if stamp_of(r) == stamp_ns:
                return r
        return None

    def _result(self, stamp_ns: int, timeout: float) -> dict:
        assert wait_for(lambda: self.result_for(stamp_ns) is not None, timeout), (
            f"no result for frame {stamp_ns}: {self.node.status()}, last error {self.node.last_error!r}"
        )
        return self.result_for(stamp_ns)

    def classify(self, rgb: np.ndarray, stamp_ns: int, **kw: Any) -> dict:
        """Publish one frame (``kw``: frame_id, encoding) and wait for its result."""
        self.image_pub.publish(frame_msg(rgb, stamp_ns, **kw))
        return self._result(stamp_ns, RESULT_S)

    def classify_counted(self, rgb: np.ndarray, stamp_ns: int) -> dict:
        """Publish one good frame through :meth:`send_and_wait` (none dropped) and return its result."""
        self.send_and_wait(frame_msg(rgb, stamp_ns))
        return self._result(stamp_ns, DEADLINE_S)

    def current_classes(self) -> list[str] | None:
        msgs = list(self.classes.msgs)
        return json.loads(msgs[-1].data) if msgs else None

    def diagnostics(self) -> dict[str, Any] | None:
        return diagnostics_of(self.diags, "classifier_node")
