"""reaction_node with ``policy:=steer`` over real topics: XY targets on ``xy`` (PointStamped) drive cmd_vel like
road following; disabled, stale, missing, old and bad targets stop it with a zero Twist; so does every exit.
Enabling, the node's state and its health go through the graph client; targets and the class list are
published raw, as a classifier would."""

from __future__ import annotations

import math
import time

import pytest
from geometry_msgs.msg import PointStamped, Twist, TwistStamped
from graphutil import Collector, Spinner, graph_client, repeating, stop_and_check, unique_ns, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from dli_perception.core.steering import target_angle
from dli_perception.nodes.qos import EVENTS, LATCHED
from dli_perception.nodes.reaction_node import ReactionNode

pytestmark = pytest.mark.graph
DISCOVERY_S = 20.0
DEADLINE_S = 10.0
FRAME_ID = "front_camera"
GAINS = dict(steer_speed=0.2, steer_kp=1.0, steer_kd=0.0, steer_bias=0.0, steer_max_angular=1.2)
NO_RAMP = dict(max_linear_accel=0.0, max_angular_accel=0.0)


def _velocity(msg) -> tuple[float, float]:
    twist = msg.twist if isinstance(msg, TwistStamped) else msg
    return round(twist.linear.x, 6), round(twist.angular.z, 6)


def _expected(x: float, y: float, speed: float = 0.2, kp: float = 1.0, limit: float = 1.2) -> tuple[float, float]:
    return round(speed, 6), round(max(-limit, min(limit, -kp * target_angle(x, y))), 6)


class Targets(Node):
    """Publishes target points on ``xy`` (stamped now, or ``age_s`` ago) and a class list, as a classifier."""

    def __init__(self, context, ns: str) -> None:
        super().__init__("targets", context=context, namespace=ns)
        self.pub = self.create_publisher(PointStamped, "xy", EVENTS)
        self.classes_pub = self.create_publisher(String, "classifier_node/classes", LATCHED)
        self.age_s = 0.0

    def send(self, x: float, y: float) -> None:
        msg = PointStamped()
        stamp_ns = self.get_clock().now().nanoseconds - round(self.age_s * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.header.frame_id = FRAME_ID
        msg.point.x, msg.point.y = float(x), float(y)
        self.pub.publish(msg)


def _last_is(collector: Collector, velocity: tuple[float, float]) -> bool:
    return collector.count() > 0 and _velocity(collector.msgs[-1]) == velocity


def _drive_until(targets: Targets, xy: tuple[float, float], cmds: Collector, velocity, timeout: float) -> bool:
    """Keep publishing ``xy`` every 50 ms until the last command received is ``velocity``."""
    return wait_for(lambda: (targets.send(*xy), _last_is(cmds, velocity))[1], timeout, 0.05)


def _sending(targets: Targets, xy: tuple[float, float]):
    """Publish ``xy`` every 50 ms from a thread while the block runs."""
    return repeating(lambda: targets.send(*xy), 0.05)


def _reaction(context, ns: str, **params) -> ReactionNode:
    values = {"policy": "steer", **GAINS, **params}
    return ReactionNode(
        context=context, namespace=ns, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]
    )


def test_steer_follows_targets_after_enable_and_stops_on_every_stop_path(ros_context):
    ns = unique_ns("reaction_steer")
    node = _reaction(ros_context, ns, **NO_RAMP)
    targets = Targets(ros_context, ns)
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, node, targets, cmds) as spinner:
        client = spinner.own(graph_client(ros_context, ns))
        states = lambda start=0: client.history("reaction_state", start)  # noqa: E731
        assert node.label_sub is None and node.scores_sub is None  # steer listens to xy only
        # disabled: targets arrive, every command is zero
        assert wait_for(
            lambda: (targets.send(0.5, 0.0), node._policy.counters.labels_received >= 5)[1], DISCOVERY_S, 0.05
        )
        assert wait_for(lambda: cmds.count() >= 5, DEADLINE_S)
        assert all(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs))
        assert client.wait_for_reaction(lambda s: s.reason == "disabled", DEADLINE_S), client.last_error

        assert client.enable_reaction(True, timeout_s=DISCOVERY_S).ok, client.last_error
        # a target to the right turns clockwise (negative angular.z) at kp * angle; to the left the other way
        right, left, near = (0.5, 0.0), (-0.3, -0.6), (0.9, 0.95)
        assert _drive_until(targets, right, cmds, _expected(*right), DEADLINE_S)
        assert _expected(*right)[1] == round(-math.pi / 4, 6)
        state = client.wait_for_reaction(lambda s: s.reason == "moving", DEADLINE_S, start=0)
        assert state is not None, client.last_error
        assert state.label is None and state.frame_id == FRAME_ID and state.stamp_ns is not None
        assert _drive_until(targets, left, cmds, _expected(*left), DEADLINE_S)
        assert _expected(*left)[1] > 0
        assert _drive_until(targets, near, cmds, (0.2, -1.2), DEADLINE_S)  # clamped to steer_max_angular

        # a bad (NaN) point: zero at once, reason bad-target; a good one moves it again
        n_states = len(states())
        assert _drive_until(targets, (math.nan, 0.0), cmds, (0.0, 0.0), DEADLINE_S)
        assert client.wait_for_reaction(lambda s: s.reason == "bad-target", DEADLINE_S, start=n_states), states(
            n_states
        )
        assert node.bad_messages > 0
        assert _drive_until(targets, right, cmds, _expected(*right), DEADLINE_S)

        # targets stop: the watchdog sends zero (reason stale) and keeps sending zero
        stale_before = node._policy.counters.stale_events
        assert wait_for(lambda: _last_is(cmds, (0.0, 0.0)), DEADLINE_S)
        assert client.wait_for_reaction(lambda s: s.reason == "stale", DEADLINE_S), client.last_error
        assert node._policy.counters.stale_events == stale_before + 1
        n = cmds.count()
        assert wait_for(lambda: cmds.count() >= n + 3, DEADLINE_S)
        assert all(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs)[n - 1 :])

        # gains change at run time
        assert node.set_parameters([Parameter("steer_kp", value=0.5), Parameter("steer_speed", value=0.1)])[
            0
        ].successful
        assert _drive_until(targets, right, cmds, _expected(*right, speed=0.1, kp=0.5), DEADLINE_S)
        bias = node.set_parameters([Parameter("steer_bias", value=0.25)])[0]
        assert bias.successful
        expected = (0.1, round(0.25 - 0.5 * math.pi / 4, 6))
        assert _drive_until(targets, right, cmds, expected, DEADLINE_S)

        # disabled while moving: zero, and targets no longer move it
        assert client.enable_reaction(False).ok, client.last_error
        assert wait_for(lambda: (targets.send(*right), _last_is(cmds, (0.0, 0.0)))[1], DEADLINE_S, 0.05)
        n = cmds.count()
        assert wait_for(lambda: (targets.send(*right), cmds.count() >= n + 5)[1], DEADLINE_S, 0.05)
        assert all(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs)[n - 1 :])

        # destroyed while moving with targets still coming: the last command is the shutdown zero
        assert client.enable_reaction(True).ok, client.last_error
        assert _drive_until(targets, right, cmds, expected, DEADLINE_S)
        n_cmds, n_states = cmds.count(), len(states())
        with _sending(targets, right):
            spinner.destroy(node)
            assert wait_for(lambda: cmds.count() > n_cmds and _last_is(cmds, (0.0, 0.0)), DEADLINE_S)
            shutdown = client.wait_for_reaction(lambda s: s.reason == "shutdown", DEADLINE_S, start=n_states)
        assert shutdown is not None and not shutdown.moving, states(n_states)
        assert states()[-1] == shutdown


def test_steer_ignores_old_targets_and_ramps_up_with_stamped_output(ros_context):
    ns = unique_ns("reaction_steer")
    node = _reaction(
        ros_context, ns, start_enabled=True, stamped=True, max_frame_age_s=0.5, max_linear_accel=0.5, rate_hz=20.0
    )
    targets = Targets(ros_context, ns)
    cmds = Collector(ros_context, TwistStamped, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, node, targets, cmds):
        # targets from images 2 s old: ignored (counted), the robot never moves
        targets.age_s = 2.0
        assert wait_for(lambda: (targets.send(0.0, 0.0), node.old_results >= 10)[1], DISCOVERY_S, 0.05)
        assert wait_for(lambda: cmds.count() >= 3, DEADLINE_S)
        assert all(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs))
        assert node._policy.last_command.reason == "no-target"
        # fresh ones: the speed ramps up in steps of at most max_linear_accel * 2 periods
        targets.age_s = 0.0
        n = cmds.count()
        assert _drive_until(targets, (0.0, 0.0), cmds, (0.2, 0.0), DEADLINE_S)
        speeds = [_velocity(m)[0] for m in list(cmds.msgs)[n:]]
        assert len([v for v in speeds if 0.0 < v < 0.2]) >= 2, speeds
        assert all(b - a <= 0.5 * 0.1 + 1e-9 for a, b in zip(speeds, speeds[1:], strict=False)), speeds
        # old again: ignored, so the fresh stream went stale: zero
        targets.age_s = 2.0
        assert _drive_until(targets, (0.0, 0.0), cmds, (0.0, 0.0), DEADLINE_S)
        assert node._policy.last_command.reason == "stale"


def test_steer_warns_when_the_model_gives_no_xy_target(ros_context):
    ns = unique_ns("reaction_steer")
    node = _reaction(ros_context, ns)
    targets = Targets(ros_context, ns)
    with Spinner(ros_context, node, targets) as spinner:
        client = spinner.own(graph_client(ros_context, ns))
        targets.classes_pub.publish(String(data='["free", "blocked"]'))
        assert wait_for(lambda: "regression model" in node._mismatch, DISCOVERY_S), node._mismatch

        def warned(health) -> bool:
            return (
                health.level == "warn"
                and "outputs x, y" in health.message
                and health.values.get("policy") == "steer"
                and health.values.get("model_classes") == "free, blocked"
            )

        assert client.wait_for_health("reaction_node", warned, DISCOVERY_S), client.health()
        targets.classes_pub.publish(String(data='["x", "y"]'))
        assert wait_for(lambda: node._mismatch == "", DEADLINE_S)


@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_steer_process_stops_with_a_final_zero_twist(node_process, ros_context, mode):
    ns = unique_ns("reaction_steer")
    proc = node_process(
        "reaction_node", "-p", "policy:=steer", "-p", "start_enabled:=true", "-p", "steer_kd:=0.0", "-r", f"__ns:={ns}"
    )
    targets = Targets(ros_context, ns)
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, targets, cmds), _sending(targets, (0.5, 0.0)):
        ok = wait_for(lambda: cmds.count() > 0 and _velocity(cmds.msgs[-1])[0] == 0.15, DISCOVERY_S)
        assert ok, f"never moving; node output:\n{proc.output()}"
        assert _velocity(cmds.msgs[-1])[1] < 0.0  # turning towards the target on the right
        time.sleep(0.2)
        assert stop_and_check(proc, mode) == 0  # targets keep coming while it stops
        assert wait_for(lambda: _last_is(cmds, (0.0, 0.0)), DEADLINE_S), [_velocity(m) for m in cmds.msgs[-5:]]
    assert "Traceback" not in proc.stderr(), proc.stderr()
    assert _velocity(cmds.msgs[-1]) == (0.0, 0.0)
