"""camera_node -> classifier_node -> reaction_node, each its own process, with a model trained here.

The synthetic camera shows `free` and `blocked` scenes in turn; the reaction node uses the shipped
collision-avoidance table (free: forward, blocked: turn in place). The test checks the Twist that
follows each class, then the stop paths: labels stop (classifier gone), `unknown`, disable and
shutdown each give a zero Twist.
"""

from __future__ import annotations

import pytest
from geometry_msgs.msg import Twist
from graphutil import Collector, Spinner, seen, stop_and_check, wait_for, wait_seen
from std_msgs.msg import String
from std_srvs.srv import SetBool

from dli_perception.core.contracts import ReactionState
from dli_perception.nodes.qos import EVENTS, LATCHED

pytestmark = [pytest.mark.graph, pytest.mark.slow]
SCENE_PERIOD_S = 2.0


def _twist(msg: Twist) -> tuple[float, float]:
    return (round(msg.linear.x, 6), round(msg.angular.z, 6))


def _states(collector: Collector) -> list[ReactionState]:
    return [ReactionState.decode(m.data) for m in list(collector.msgs)]


def _reason(reason: str):
    return lambda m: ReactionState.decode(m.data).reason == reason


def _zero(m: Twist) -> bool:
    return _twist(m) == (0.0, 0.0)


def test_trained_model_drives_the_robot_per_class_and_every_stop_path_zeroes_it(
    node_process, ros_context, trained_scene_model
):
    camera = node_process(
        "camera_node",
        "-p",
        "width:=64",
        "-p",
        "height:=48",
        "-p",
        "fps:=10.0",
        "-p",
        f"synthetic.scene_period_s:={SCENE_PERIOD_S}",
        "-p",
        "synthetic.classes:=[free, blocked]",
    )
    classifier = node_process(
        "classifier_node",
        "-p",
        f"model_dir:={trained_scene_model}",
        "-p",
        "smoothing:=none",
        "-p",
        "threads:=1",
    )
    reaction = node_process("reaction_node", "-p", "start_enabled:=true")
    cmd = Collector(ros_context, Twist, "cmd_vel", EVENTS, name="cmd")
    state = Collector(ros_context, String, "/reaction_node/state", LATCHED, name="state")
    labels = Collector(ros_context, String, "label", EVENTS, name="labels")
    client_node = state  # any node of the context can own the service client and the publisher
    enable = client_node.create_client(SetBool, "/reaction_node/enable")
    teacher = client_node.create_publisher(String, "label", EVENTS)

    def moved(label: str, check) -> bool:
        return any(s.label == label and check(s.linear_x, s.angular_z) for s in _states(state))

    with Spinner(ros_context, cmd, state, labels):
        # 1. Each class gets its action: free -> forward only, blocked -> turning in place only.
        ok = wait_for(
            lambda: moved("free", lambda x, z: x > 0 and z == 0) and moved("blocked", lambda x, z: z > 0 and x == 0),
            timeout=90,
            interval=0.2,
        )
        assert ok, (_states(state)[-10:], camera.output(), classifier.output(), reaction.output())
        for s in _states(state):
            if s.label == "free" and s.reason == "moving":
                assert s.angular_z == 0 and s.linear_x > 0, s
            if s.label == "blocked" and s.reason == "moving":
                assert s.linear_x == 0 and s.angular_z > 0, s

        # 2. Labels stop (the classifier goes away): the watchdog stops the robot, and it stays stopped.
        # Each step below is judged over the messages received since it began (a state lasts only until
        # the 0.5 s watchdog replaces it), with deadlines.
        n_state, n_cmd = state.count(), cmd.count()
        assert stop_and_check(classifier, "int") == 0, classifier.output()
        assert wait_seen(state, _reason("stale"), 10, n_state), _states(state)[-3:]
        assert wait_seen(cmd, _zero, 10, n_cmd)
        first_zero = next(i for i, m in enumerate(list(cmd.msgs)) if i >= n_cmd and _zero(m))
        assert wait_for(lambda: cmd.count() >= first_zero + 3, 10)
        assert all(_zero(m) for m in list(cmd.msgs)[first_zero:])

        # 3. `unknown` stops it; a known label moves it again first, so the stop is the label's doing.
        n_state = state.count()
        teacher.publish(String(data="free"))
        assert wait_seen(state, _reason("moving"), 10, n_state), _states(state)[-3:]
        n_state, n_cmd = state.count(), cmd.count()
        teacher.publish(String(data="unknown"))
        assert wait_seen(state, _reason("unknown"), 10, n_state), _states(state)[-3:]
        assert wait_seen(cmd, _zero, 5, n_cmd)

        # 4. Disable stops it even while a moving label keeps coming.
        n_state = state.count()
        teacher.publish(String(data="blocked"))
        assert wait_seen(state, _reason("moving"), 10, n_state), _states(state)[-3:]
        assert enable.wait_for_service(timeout_sec=10)
        n_state, n_cmd = state.count(), cmd.count()
        future = enable.call_async(SetBool.Request(data=False))
        assert wait_for(future.done, timeout=10) and future.result().success
        teacher.publish(String(data="blocked"))
        assert wait_seen(state, _reason("disabled"), 10, n_state), _states(state)[-3:]
        assert wait_seen(cmd, _zero, 5, n_cmd)
        assert not seen(state, _reason("moving"), n_state)  # the label did not move it while disabled

        # 5. Shutdown while moving: the last command is a zero Twist.
        assert wait_for(future.done, timeout=1)
        future = enable.call_async(SetBool.Request(data=True))
        assert wait_for(future.done, timeout=10) and future.result().success

        def keep_turning() -> bool:
            teacher.publish(String(data="blocked"))
            return _twist(cmd.msgs[-1])[1] > 0

        assert wait_for(keep_turning, timeout=10, interval=0.1)
        n_state, n_cmd = state.count(), cmd.count()
        assert stop_and_check(reaction, "int2") == 0, reaction.output()
        assert wait_seen(state, _reason("shutdown"), 5, n_state)
        assert wait_seen(cmd, _zero, 5, n_cmd) and _zero(cmd.msgs[-1])  # the last command received is zero
    assert stop_and_check(camera, "term") == 0
    for proc in (camera, classifier, reaction):
        assert "Traceback" not in proc.stderr(), proc.stderr()
