"""reaction_node over real topics: the right Twist per class, zero Twist on every stop path, clean exits.

The test publishes labels as the classifier does (bad ones included) and reads ``cmd_vel`` raw (the
Twist itself is what is checked); it enables the node and reads its state through the package's
graph client.
"""

from __future__ import annotations

import statistics
import time

import pytest
from geometry_msgs.msg import Twist, TwistStamped
from graphutil import Collector, Spinner, graph_client, repeating, stop_and_check, unique_ns, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from dli_perception.core.contracts import Label, ReactionState
from dli_perception.errors import ConfigError
from dli_perception.nodes.qos import EVENTS
from dli_perception.nodes.reaction_node import ReactionNode

pytestmark = pytest.mark.graph
DISCOVERY_S = 20.0  # deadline for the first message across processes (discovery took up to ~3 s here)
DEADLINE_S = 10.0  # deadline for a reaction once the graph is connected


def _velocity(msg) -> tuple[float, float]:
    twist = msg.twist if isinstance(msg, TwistStamped) else msg
    return twist.linear.x, twist.angular.z


class Driver(Node):
    """Publishes labels on ``label`` as they are, as the classifier does (bad ones included)."""

    def __init__(self, context, ns: str) -> None:
        super().__init__("driver", context=context, namespace=ns)
        self.label_pub = self.create_publisher(String, "label", EVENTS)

    def send(self, label: str) -> None:
        self.label_pub.publish(String(data=label))


def _last_is(collector: Collector, velocity: tuple[float, float]) -> bool:
    return collector.count() > 0 and _velocity(collector.msgs[-1]) == velocity


def _drive_until(
    driver: Driver, label: str, collector: Collector, velocity: tuple[float, float], timeout: float
) -> bool:
    """Keep publishing ``label`` (every 50 ms) until the last command received is ``velocity``."""

    def step() -> bool:
        driver.send(label)
        return _last_is(collector, velocity)

    return wait_for(step, timeout=timeout, interval=0.05)


def _reaction(context, ns: str, **params) -> ReactionNode:
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return ReactionNode(context=context, namespace=ns, parameter_overrides=overrides)


def test_right_twist_per_class_only_after_enable_and_zero_on_every_stop(ros_context):
    ns = unique_ns("reaction_test")
    node = _reaction(ros_context, ns, max_linear_accel=0.0, max_angular_accel=0.0)
    driver = Driver(ros_context, ns)
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, node, driver, cmds) as spinner:
        client = spinner.own(graph_client(ros_context, ns))
        states = lambda start=0: client.history("reaction_state", start)  # noqa: E731

        def now(reason: str) -> bool:
            return client.wait_for_reaction(lambda s: s.reason == reason, DEADLINE_S) is not None

        # disabled at start: labels arrive, every command is zero
        assert wait_for(lambda: (driver.send("free"), node._policy.counters.labels_received >= 5)[1], DISCOVERY_S, 0.05)
        assert wait_for(lambda: cmds.count() >= 5, DEADLINE_S)
        assert all(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs))
        assert wait_for(lambda: len(states()) > 0, DEADLINE_S)
        assert all(s.reason == "disabled" for s in states())

        response = client.enable_reaction(True, timeout_s=DISCOVERY_S)
        assert response.ok and response.message == "motion enabled", response
        assert _drive_until(driver, "free", cmds, (0.15, 0.0), DEADLINE_S)
        n_states = len(states())
        assert _drive_until(driver, "blocked", cmds, (0.0, 1.0), DEADLINE_S)
        blocked = ReactionState(True, "blocked", "moving", 0.0, 1.0)  # a plain label: no source header
        assert client.wait_for_reaction(lambda s: s == blocked, DEADLINE_S, start=n_states), states(n_states)

        # unknown: zero while it lasts
        assert _drive_until(driver, "unknown", cmds, (0.0, 0.0), DEADLINE_S)
        assert now("unknown"), client.last_error
        # an unmapped label takes the default (stop)
        assert _drive_until(driver, "free", cmds, (0.15, 0.0), DEADLINE_S)
        assert _drive_until(driver, "cat", cmds, (0.0, 0.0), DEADLINE_S)
        assert now("unmapped"), client.last_error

        # labels stop: the watchdog sends zero (the policy tests pin the exact timing)
        assert _drive_until(driver, "free", cmds, (0.15, 0.0), DEADLINE_S)
        stale_before = node._policy.counters.stale_events
        assert wait_for(lambda: _last_is(cmds, (0.0, 0.0)), DEADLINE_S)
        assert now("stale"), client.last_error
        assert node._policy.counters.stale_events == stale_before + 1
        n = cmds.count()
        assert wait_for(lambda: cmds.count() >= n + 3, DEADLINE_S)  # and keeps sending zero
        assert all(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs)[n - 1 :])

        # disable while moving: zero, and labels no longer move it
        assert _drive_until(driver, "blocked", cmds, (0.0, 1.0), DEADLINE_S)
        assert client.enable_reaction(False).ok, client.last_error
        assert wait_for(lambda: (driver.send("blocked"), _last_is(cmds, (0.0, 0.0)))[1], DEADLINE_S, 0.05)
        n = cmds.count()
        assert wait_for(lambda: (driver.send("blocked"), cmds.count() >= n + 5)[1], DEADLINE_S, 0.05)
        assert all(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs)[n - 1 :])
        assert now("disabled"), client.last_error

        # destroyed while moving, labels still coming: its last command is zero, received while cmds still spins
        assert client.enable_reaction(True).ok, client.last_error
        assert _drive_until(driver, "free", cmds, (0.15, 0.0), DEADLINE_S)
        n_cmds, n_states = cmds.count(), len(states())
        with repeating(lambda: driver.send("free"), 0.05):
            spinner.destroy(node)
            assert wait_for(lambda: cmds.count() > n_cmds and _last_is(cmds, (0.0, 0.0)), DEADLINE_S), [
                _velocity(m) for m in list(cmds.msgs)[n_cmds - 1 :]
            ]
        # the zero is the shutdown path's (not the watchdog's or a label's), and nothing moves it after
        assert wait_for(lambda: any(s.reason == "shutdown" for s in states(n_states)), DEADLINE_S), states(n_states)
        shutdown = states(n_states)
        assert shutdown and shutdown[-1].reason == "shutdown" and shutdown[-1].linear_x == 0.0, shutdown
        assert all(r.reason != "stale" for r in shutdown), shutdown
        assert all(_velocity(m) == (0.15, 0.0) for m in list(cmds.msgs)[n_cmds - 1 : -1])


def test_ramp_limits_speed_up_and_thumbs_table_with_stamped_output(ros_context):
    ns = unique_ns("reaction_test")
    node = _reaction(
        ros_context,
        ns,
        actions_file="reaction_thumbs.yaml",
        start_enabled=True,
        stamped=True,
        max_linear_accel=0.5,
        rate_hz=20.0,
    )
    driver = Driver(ros_context, ns)
    cmds = Collector(ros_context, TwistStamped, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, node, driver, cmds):
        assert _drive_until(driver, "thumbs_up", cmds, (0.15, 0.0), DISCOVERY_S)
        speeds = [_velocity(m)[0] for m in list(cmds.msgs)]
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in list(cmds.msgs)]
        moving = [i for i, v in enumerate(speeds) if v > 0.0]
        # several steps on the way up, each no bigger than max_linear_accel * max_step_s (2 periods)
        assert len(moving) >= 3
        assert all(b - a <= 0.5 * 0.1 + 1e-9 for a, b in zip(speeds, speeds[1:], strict=False))
        assert stamps == sorted(stamps)
        # thumbs_down backs up, then stops once its 1 s duration has elapsed although the label persists
        assert _drive_until(driver, "thumbs_down", cmds, (-0.1, 0.0), DEADLINE_S)
        assert _drive_until(driver, "thumbs_down", cmds, (0.0, 0.0), DEADLINE_S)
        assert node._policy.last_command.reason == "duration-elapsed"


def _stamp_ns(msg: TwistStamped) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_watchdog_stops_at_the_stale_deadline_not_at_the_next_periodic_command(ros_context):
    """The zero Twist for a stale label goes out at last label + stale_timeout_s. With commands every
    1 s (rate_hz 1), waiting for the next periodic one would be up to 1 s late (median ~0.5 s); the
    lateness is read from the commands' own stamps, so a loaded machine's delivery delay is left out."""
    ns = unique_ns("reaction_test")
    stale_s = 0.3
    node = _reaction(
        ros_context,
        ns,
        start_enabled=True,
        stamped=True,
        rate_hz=1.0,
        stale_timeout_s=stale_s,
        max_linear_accel=0.0,
        max_angular_accel=0.0,
    )
    driver = Driver(ros_context, ns)
    cmds = Collector(ros_context, TwistStamped, f"{ns}/cmd_vel", EVENTS, name="cmds")
    lateness_s: list[float] = []
    with Spinner(ros_context, node, driver, cmds):
        assert wait_for(lambda: driver.label_pub.get_subscription_count() > 0, DISCOVERY_S)
        assert wait_for(lambda: node.cmd_pub.get_subscription_count() > 0, DISCOVERY_S)
        for _ in range(6):
            assert _drive_until(driver, "free", cmds, (0.15, 0.0), DEADLINE_S)
            n = cmds.count()
            sent_ns = time.time_ns()
            driver.send("free")  # the last label
            assert wait_for(lambda n=n: any(_velocity(m) == (0.0, 0.0) for m in list(cmds.msgs)[n:]), DEADLINE_S)
            stop = next(m for m in list(cmds.msgs)[n:] if _velocity(m) == (0.0, 0.0))
            lateness_s.append((_stamp_ns(stop) - sent_ns) / 1e9 - stale_s)
            assert node._policy.last_command.reason == "stale"
    print(f"stop lateness after the stale deadline, s: {[round(x, 4) for x in lateness_s]}")
    assert min(lateness_s) > -0.01, lateness_s  # never before the deadline (label delivery aside)
    assert statistics.median(lateness_s) < 0.1, lateness_s  # at the deadline, not at the next 1 s tick


def test_bad_actions_file_is_a_config_error(ros_context, tmp_path):
    bad = tmp_path / "table.yaml"
    bad.write_text("actions:\n  free: {linear_x: fast}\n")
    with pytest.raises(ConfigError, match="linear_x must be a number"):
        _reaction(ros_context, unique_ns("reaction_test"), actions_file=str(bad))
    with pytest.raises(ConfigError, match="not found"):
        _reaction(ros_context, unique_ns("reaction_test"), actions_file="no_such_table.yaml")


def test_bad_label_message_stops_and_is_counted(ros_context):
    ns = unique_ns("reaction_test")
    node = _reaction(ros_context, ns, start_enabled=True, max_linear_accel=0.0, min_score=0.5)
    driver = Driver(ros_context, ns)
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, node, driver, cmds):
        scored = Label("free", 0.9).encode()
        assert _drive_until(driver, scored, cmds, (0.15, 0.0), DISCOVERY_S)
        assert _drive_until(driver, "free", cmds, (0.0, 0.0), DEADLINE_S)  # no score: below min_score
        assert node._policy.last_command.reason == "low-score"
        assert _drive_until(driver, scored, cmds, (0.15, 0.0), DEADLINE_S)
        assert _drive_until(driver, '{"label": ', cmds, (0.0, 0.0), DEADLINE_S)
        assert node.bad_messages > 0 and node._policy.last_command.reason == "unknown"


@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_process_stops_with_a_final_zero_twist(node_process, ros_context, mode):
    ns = unique_ns("reaction_test")
    proc = node_process("reaction_node", "-p", "start_enabled:=true", "-r", f"__ns:={ns}")
    driver = Driver(ros_context, ns)
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, driver, cmds), repeating(lambda: driver.send("free"), 0.05):
        ok = wait_for(lambda: _last_is(cmds, (0.15, 0.0)), DISCOVERY_S)
        assert ok, f"never moving; node output:\n{proc.output()}"
        assert stop_and_check(proc, mode) == 0  # labels keep coming while it stops
        assert wait_for(lambda: _last_is(cmds, (0.0, 0.0)), DEADLINE_S), [_velocity(m) for m in cmds.msgs[-5:]]
    assert "Traceback" not in proc.stderr(), proc.stderr()
    assert _velocity(cmds.msgs[-1]) == (0.0, 0.0)
