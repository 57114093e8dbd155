"""reaction_node fed by a real classifier_node: its scores drive the robot, ``min_score`` and
``max_frame_age_s`` work, and the model's class list is checked against the action table.

Both nodes run in one private context with a nearest-colour model (test/fixtures_models.py) and a
frame publisher; the reaction node uses the built-in collision-avoidance table (free: forward,
blocked: turn in place). ``cmd_vel`` is read raw; the reaction state, diagnostics and model switch
go through the package's graph client.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_models import build_colour_model_dir, solid
from geometry_msgs.msg import Twist
from graphutil import Collector, Spinner, graph_client, repeating, unique_ns, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from dli_perception.core.contracts import ReactionState
from dli_perception.core.imaging import cv2_to_imgmsg
from dli_perception.nodes.classifier_node import ClassifierNode
from dli_perception.nodes.qos import EVENTS, SENSOR_DATA
from dli_perception.nodes.reaction_node import ReactionNode

pytestmark = pytest.mark.graph
DEADLINE = 20.0  # discovery, model load and a reaction, in one private context
FREE, BLOCKED = (0, 255, 0), (255, 0, 0)
UNSURE = (128, 128, 0)  # as near to the free colour as to the blocked one: a score of about 0.5
FRAME_ID = "front_camera"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reaction_models")
    return {
        "collision": build_colour_model_dir(
            root / "collision", ("free", "blocked"), {"free": FREE, "blocked": BLOCKED}
        ),
        "shapes": build_colour_model_dir(
            root / "shapes",
            ("circle", "square", "triangle"),
            {"circle": (255, 0, 0), "square": (0, 255, 0), "triangle": (0, 0, 255)},
        ),
    }


def _params(**values) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def _classifier(context, ns: str, model_dir: Path, **params) -> ClassifierNode:
    values = {"model_dir": str(model_dir), "backend": "onnxruntime", "threads": 1, **params}
    return ClassifierNode(context=context, namespace=ns, parameter_overrides=_params(**values))


class Camera(Node):
    """Publishes solid-colour frames on ``image_raw`` every 50 ms, stamped now (or ``age_s`` ago)."""

    def __init__(self, context, ns: str) -> None:
        super().__init__("frames", context=context, namespace=ns)
        self.pub = self.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.colour = FREE
        self.age_s = 0.0
        self.sent_ns: list[int] = []

    def send(self) -> None:
        msg = cv2_to_imgmsg(solid(self.colour), encoding="rgb8")
        stamp_ns = self.get_clock().now().nanoseconds - round(self.age_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = FRAME_ID
        self.sent_ns.append(stamp_ns)
        self.pub.publish(msg)

    def streaming(self):
        """Send a frame every 50 ms while the block runs."""
        return repeating(self.send, 0.05)


def _twist(msg: Twist) -> tuple[float, float]:
    return (round(msg.linear.x, 6), round(msg.angular.z, 6))


def _last(collector: Collector, check: Callable[[object], bool]) -> bool:
    return collector.count() > 0 and check(collector.msgs[-1])


def test_scores_drive_the_robot_and_min_score_stops_only_while_the_model_is_unsure(ros_context, models):
    ns = unique_ns("reaction_scores")
    classifier = _classifier(ros_context, ns, models["collision"], smoothing="none", threshold=0.0, hysteresis=0.0)
    reaction = ReactionNode(
        context=ros_context,
        namespace=ns,
        parameter_overrides=_params(start_enabled=True, min_score=0.8, max_linear_accel=0.0, max_angular_accel=0.0),
    )
    camera = Camera(ros_context, ns)
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, classifier, reaction, camera, cmds) as spinner, camera.streaming():
        client = spinner.own(graph_client(ros_context, ns))
        # a sure "free": forward, and the state names the frame it came from
        assert wait_for(lambda: _last(cmds, lambda m: _twist(m) == (0.15, 0.0)), DEADLINE), (
            classifier.status(),
            client.reaction_state(),
        )
        state: ReactionState | None = client.wait_for_reaction(lambda s: s.reason == "moving", DEADLINE)
        assert state is not None, client.last_error
        assert state.label == "free" and state.frame_id == FRAME_ID and state.stamp_ns in camera.sent_ns, state
        # an unsure frame (score about 0.5 < min_score 0.8): the label counts as unknown, the robot stops
        camera.colour = UNSURE
        assert wait_for(lambda: _last(cmds, lambda m: _twist(m) == (0.0, 0.0)), DEADLINE)
        assert client.wait_for_reaction(lambda s: s.reason == "low-score", DEADLINE), client.reaction_state()
        assert reaction._policy.last_command.reason == "low-score"
        # a sure "blocked" moves it again: a low score never stops it for good
        camera.colour = BLOCKED
        assert wait_for(lambda: _last(cmds, lambda m: _twist(m) == (0.0, 1.0)), DEADLINE), client.reaction_state()
        assert client.wait_for_reaction(lambda s: s.label == "blocked", DEADLINE), client.reaction_state()
        # the classifier's plain labels arrived too, and were left to simple consumers
        assert reaction.labels_ignored > 0 and reaction.bad_messages == 0


def test_results_from_old_frames_are_ignored_with_max_frame_age(ros_context, models):
    ns = unique_ns("reaction_scores")
    classifier = _classifier(ros_context, ns, models["collision"], smoothing="none")
    reaction = ReactionNode(
        context=ros_context,
        namespace=ns,
        parameter_overrides=_params(start_enabled=True, max_frame_age_s=1.0, max_linear_accel=0.0),
    )
    camera = Camera(ros_context, ns)
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, classifier, reaction, camera, cmds), camera.streaming():
        assert wait_for(lambda: _last(cmds, lambda m: _twist(m) == (0.15, 0.0)), DEADLINE)
        assert reaction.old_results == 0
        camera.age_s = 5.0  # the same scene, from frames 5 s old: too old to act on
        assert wait_for(lambda: _last(cmds, lambda m: _twist(m) == (0.0, 0.0)), DEADLINE)
        assert wait_for(lambda: reaction._policy.last_command.reason == "stale", DEADLINE)
        assert reaction.old_results > 0
        n = cmds.count()
        assert wait_for(lambda: cmds.count() >= n + 5, DEADLINE)
        assert all(_twist(m) == (0.0, 0.0) for m in list(cmds.msgs)[n - 1 :])  # plain labels did not move it


def test_warns_when_the_models_classes_and_the_action_table_do_not_fit(ros_context, models):
    ns = unique_ns("reaction_scores")
    classifier = _classifier(ros_context, ns, models["shapes"])
    reaction = ReactionNode(context=ros_context, namespace=ns)  # the built-in free/blocked table
    camera = Camera(ros_context, ns)
    with Spinner(ros_context, classifier, reaction, camera) as spinner:
        client = spinner.own(graph_client(ros_context, ns))

        def with_classes(names: str):
            return client.wait_for_health("reaction_node", lambda h: h.values.get("model_classes") == names, DEADLINE)

        status = with_classes("circle, square, triangle")
        assert status is not None, client.last_error
        assert status.level == "warn", status
        assert "share no names" in status.message, status.message
        mismatch = status.values["class_table_mismatch"]
        assert "classes with no action: circle, square, triangle" in mismatch, mismatch
        assert "actions for classes the model doesn't have: free, blocked" in mismatch, mismatch

        # the classifier swaps to a model whose classes the table maps: the warning goes
        assert wait_for(lambda: client.switch_model(str(models["collision"])).ok, DEADLINE), client.last_error
        status = with_classes("free, blocked")
        assert status is not None, client.last_error
        assert status.level == "ok" and status.values["class_table_mismatch"] == "", status
        assert reaction._mismatch == ""
