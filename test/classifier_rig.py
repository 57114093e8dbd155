"""A classifier_node in one private context, a frame source, and the package's graph client reading its outputs.

Used by the node tests and the reliability tests alike: frames go out as they are (bad encodings
included) from a :class:`~graphutil.FrameSource`; results are read back through
:class:`~dli_perception.graph_client.Teacher` (its history keeps every scores, label, class list and
``/diagnostics`` status), typed as :mod:`dli_perception.core.contracts` defines them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from graphutil import DEADLINE_S, DISCOVERY_S, FrameSource, Spinner, graph_client, wait_for
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from dli_perception.core.contracts import Scores
from dli_perception.core.imaging import cv2_to_imgmsg
from dli_perception.graph_client_types import NodeHealth

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


class ClassifierRig:
    """classifier_node + a frame source + the graph client (``client``) reading labels, scores, classes, health."""

    def __init__(self, context, spinner: Spinner, **params: Any) -> None:
        from dli_perception.nodes.classifier_node import ClassifierNode

        values = {"backend": "onnxruntime", "threads": 1, **params}
        self.spinner = spinner
        self.node = spinner.add(
            ClassifierNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        )
        self.source = spinner.add(FrameSource(context))
        self.image_pub = self.source.image_pub
        self.model_pub = self.source.model_pub  # raw text on model_updated ("" reloads the model serving)
        self.client = spinner.own(graph_client(context, node_name="classifier_rig_client"))
        self.sent = 0
        """Frames published through :meth:`send_and_wait`."""

    def ready(self) -> None:
        """Wait until the node holds a model and every publisher and subscription is connected."""
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

    def results(self) -> list[Scores]:
        """Every result received, oldest first."""
        return self.client.history("scores")

    def labels(self) -> list[str]:
        """Every label received on ``label``, oldest first."""
        return self.client.history("label")

    def _result(self, stamp_ns: int, timeout: float) -> Scores:
        result = self.client.wait_for_scores(stamp_ns, timeout)
        assert result is not None, (
            f"no result for frame {stamp_ns}: {self.node.status()}, last error {self.node.last_error!r}"
        )
        return result

    def classify(self, rgb: np.ndarray, stamp_ns: int, **kw: Any) -> Scores:
        """Publish one frame (``kw``: frame_id, encoding) and wait for its result."""
        self.image_pub.publish(frame_msg(rgb, stamp_ns, **kw))
        return self._result(stamp_ns, RESULT_S)

    def classify_counted(self, rgb: np.ndarray, stamp_ns: int) -> Scores:
        """Publish one good frame through :meth:`send_and_wait` (none dropped) and return its result."""
        self.send_and_wait(frame_msg(rgb, stamp_ns))
        return self._result(stamp_ns, DEADLINE_S)

    def current_classes(self) -> list[str] | None:
        classes = self.client.classes()
        return list(classes.names) if classes is not None else None

    def health(self) -> NodeHealth | None:
        """The classifier's newest ``/diagnostics`` status."""
        return self.client.node_health("classifier_node")

    def diag(self, key: str) -> str | None:
        """``key`` of the classifier's newest ``/diagnostics`` status (None when none or absent)."""
        health = self.health()
        return health.values.get(key) if health is not None else None
