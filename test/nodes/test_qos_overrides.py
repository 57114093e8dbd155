"""``qos_overrides.*`` parameters really change the QoS of frames and labels, and bad ones are refused.

Real nodes in a private context. Reliability is read back from the graph as other participants see
it (``get_publishers_info_by_topic`` / ``get_subscriptions_info_by_topic``); the history depth is
not part of DDS discovery (the graph reports 0), so it is read from the endpoint the node created.
"""

from __future__ import annotations

import pytest
from graphutil import unique_ns, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, ReliabilityPolicy

from dli_perception.errors import ConfigError
from dli_perception.nodes.camera_node import CameraNode
from dli_perception.nodes.qos import EVENTS, SENSOR_DATA, unused_qos_overrides
from dli_perception.nodes.reaction_node import ReactionNode

pytestmark = pytest.mark.graph
DEADLINE = 10.0


def _endpoint(observer: Node, topic: str, node_name: str, publisher: bool):
    """The QoS profile ``node_name`` created its endpoint on ``topic`` with, as the graph reports it."""
    found = []

    def look() -> bool:
        infos = (observer.get_publishers_info_by_topic if publisher else observer.get_subscriptions_info_by_topic)(
            topic
        )
        found[:] = [i.qos_profile for i in infos if i.node_name == node_name]
        return bool(found)

    assert wait_for(look, DEADLINE), f"no endpoint of {node_name} on {topic}"
    return found[0]


def test_overrides_change_the_frame_publisher_and_the_label_subscription(ros_context):
    ns = unique_ns("qos_test")
    camera = CameraNode(
        context=ros_context,
        namespace=ns,
        parameter_overrides=[
            Parameter("width", value=32),
            Parameter("height", value=24),
            Parameter(f"qos_overrides.{ns}/image_raw.publisher.depth", value=4),
            Parameter(f"qos_overrides.{ns}/image_raw.publisher.reliability", value="reliable"),
        ],
    )
    reaction = ReactionNode(
        context=ros_context,
        namespace=ns,
        parameter_overrides=[
            Parameter(f"qos_overrides.{ns}/label.subscription.depth", value=1),
            Parameter(f"qos_overrides.{ns}/label.subscription.reliability", value="best_effort"),
        ],
    )
    plain = ReactionNode(context=ros_context, namespace=f"{ns}/plain")  # the same node without overrides
    observer = Node("observer", context=ros_context)
    try:
        frames = _endpoint(observer, f"{ns}/image_raw", "camera_node", publisher=True)
        assert frames.reliability == ReliabilityPolicy.RELIABLE, frames
        assert camera.image_pub.qos_profile.depth == 4
        assert (SENSOR_DATA.depth, SENSOR_DATA.reliability) == (1, ReliabilityPolicy.BEST_EFFORT)  # not changed
        labels = _endpoint(observer, f"{ns}/label", "reaction_node", publisher=False)
        assert labels.reliability == ReliabilityPolicy.BEST_EFFORT, labels
        assert reaction.label_sub.qos_profile.depth == 1
        default = _endpoint(observer, f"{ns}/plain/label", "reaction_node", publisher=False)
        assert default.reliability == ReliabilityPolicy.RELIABLE, default
        assert plain.label_sub.qos_profile.depth == EVENTS.depth and EVENTS.depth != 1
        assert plain.label_sub.qos_profile.history == HistoryPolicy.KEEP_LAST
        # the overrides are the node's (read-only) parameters now, so they show in `ros2 param dump`
        assert reaction.get_parameter(f"qos_overrides.{ns}/label.subscription.depth").value == 1
        assert unused_qos_overrides(reaction) == [] and unused_qos_overrides(camera) == []
    finally:
        for node in (observer, plain, reaction, camera):
            node.destroy_node()


def test_bad_override_values_are_refused_and_stray_ones_reported(ros_context):
    ns = unique_ns("qos_test")
    with pytest.raises(ConfigError, match=r"label\.subscription\.reliability: 'fast' is no reliability policy"):
        ReactionNode(
            context=ros_context,
            namespace=ns,
            parameter_overrides=[Parameter(f"qos_overrides.{ns}/label.subscription.reliability", value="fast")],
        )
    with pytest.raises(ConfigError, match="depth must be a whole number >= 0"):
        ReactionNode(
            context=ros_context,
            namespace=ns,
            parameter_overrides=[Parameter(f"qos_overrides.{ns}/label.subscription.depth", value=-2)],
        )
    stray = f"qos_overrides.{ns}/lable.subscription.depth"  # a typo of the topic
    node = ReactionNode(context=ros_context, namespace=ns, parameter_overrides=[Parameter(stray, value=3)])
    try:
        assert unused_qos_overrides(node) == [stray]
    finally:
        node.destroy_node()
