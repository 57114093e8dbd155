"""camera_node -> classifier_node -> reaction_node, each its own process, with a model trained here.

The synthetic camera shows `free` and `blocked` scenes in turn; the reaction node uses the shipped
collision-avoidance table (free: forward, blocked: turn in place). The test checks the Twist that
follows each class, then the stop paths: labels stop (classifier gone), `unknown`, disable and
shutdown each give a zero Twist. The reaction node's state and its enable service go through the
package's graph client; ``cmd_vel`` is read raw, and labels are published raw as the classifier does.
"""

from __future__ import annotations

import pytest
from geometry_msgs.msg import Twist
from graphutil import Collector, Spinner, graph_client, ros_args, scene_camera_args, stop_and_check, wait_for, wait_seen
from rclpy.node import Node
from std_msgs.msg import String

from dli_perception.core.contracts import ReactionState
from dli_perception.nodes.qos import EVENTS

pytestmark = [pytest.mark.graph, pytest.mark.slow]
SCENE_PERIOD_S = 2.0


def _twist(msg: Twist) -> tuple[float, float]:
    return (round(msg.linear.x, 6), round(msg.angular.z, 6))


def _reason(reason: str):
    return lambda s: s.reason == reason


def _zero(m: Twist) -> bool:
    return _twist(m) == (0.0, 0.0)


def test_trained_model_drives_the_robot_per_class_and_every_stop_path_zeroes_it(
    node_process, ros_context, trained_scene_model
):
    camera = node_process("camera_node", *scene_camera_args(SCENE_PERIOD_S))
    classifier = node_process("classifier_node", *ros_args(model_dir=trained_scene_model, smoothing="none", threads=1))
    reaction = node_process("reaction_node", "-p", "start_enabled:=true")
    cmd = Collector(ros_context, Twist, "cmd_vel", EVENTS, name="cmd")
    labeller = Node("labeller", context=ros_context)  # publishes labels as the classifier does
    teacher = labeller.create_publisher(String, "label", EVENTS)

    with Spinner(ros_context, cmd, labeller) as spinner:
        client = spinner.own(graph_client(ros_context))

        def states(start: int = 0) -> list[ReactionState]:
            return client.history("reaction_state", start)

        def moved(label: str, check) -> bool:
            return any(s.label == label and check(s.linear_x, s.angular_z) for s in states())

        def seen_state(check, timeout: float, start: int) -> bool:
            return client.wait_for_reaction(check, timeout, start=start) is not None

        # 1. Each class gets its action: free -> forward only, blocked -> turning in place only.
        ok = wait_for(
            lambda: moved("free", lambda x, z: x > 0 and z == 0) and moved("blocked", lambda x, z: z > 0 and x == 0),
            timeout=90,
            interval=0.2,
        )
        assert ok, (states()[-10:], camera.output(), classifier.output(), reaction.output())
        for s in states():
            if s.label == "free" and s.reason == "moving":
                assert s.angular_z == 0 and s.linear_x > 0, s
            if s.label == "blocked" and s.reason == "moving":
                assert s.linear_x == 0 and s.angular_z > 0, s

        # 2. Labels stop (the classifier goes away): the watchdog stops the robot, and it stays stopped.
        # Each step below is judged over the messages received since it began (a state lasts only until
        # the 0.5 s watchdog replaces it), with deadlines.
        n_state, n_cmd = len(states()), cmd.count()
        assert stop_and_check(classifier, "int") == 0, classifier.output()
        assert seen_state(_reason("stale"), 10, n_state), states()[-3:]
        assert wait_seen(cmd, _zero, 10, n_cmd)
        first_zero = next(i for i, m in enumerate(list(cmd.msgs)) if i >= n_cmd and _zero(m))
        assert wait_for(lambda: cmd.count() >= first_zero + 3, 10)
        assert all(_zero(m) for m in list(cmd.msgs)[first_zero:])

        # 3. `unknown` stops it; a known label moves it again first, so the stop is the label's doing.
        n_state = len(states())
        teacher.publish(String(data="free"))
        assert seen_state(_reason("moving"), 10, n_state), states()[-3:]
        n_state, n_cmd = len(states()), cmd.count()
        teacher.publish(String(data="unknown"))
        assert seen_state(_reason("unknown"), 10, n_state), states()[-3:]
        assert wait_seen(cmd, _zero, 5, n_cmd)

        # 4. Disable stops it even while a moving label keeps coming.
        n_state = len(states())
        teacher.publish(String(data="blocked"))
        assert seen_state(_reason("moving"), 10, n_state), states()[-3:]
        assert client.wait_for_services(10, ["enable"]) == []
        n_state, n_cmd = len(states()), cmd.count()
        reply = client.enable_reaction(False, timeout_s=10)
        assert reply.ok, reply
        teacher.publish(String(data="blocked"))
        assert seen_state(_reason("disabled"), 10, n_state), states()[-3:]
        assert wait_seen(cmd, _zero, 5, n_cmd)
        assert not any(s.reason == "moving" for s in states(n_state))  # the label did not move it while disabled

        # 5. Shutdown while moving: the last command is a zero Twist.
        reply = client.enable_reaction(True, timeout_s=10)
        assert reply.ok, reply

        def keep_turning() -> bool:
            teacher.publish(String(data="blocked"))
            return _twist(cmd.msgs[-1])[1] > 0

        assert wait_for(keep_turning, timeout=10, interval=0.1)
        n_state, n_cmd = len(states()), cmd.count()
        assert stop_and_check(reaction, "int2") == 0, reaction.output()
        assert seen_state(_reason("shutdown"), 5, n_state)
        assert wait_seen(cmd, _zero, 5, n_cmd) and _zero(cmd.msgs[-1])  # the last command received is zero
    assert stop_and_check(camera, "term") == 0
    for proc in (camera, classifier, reaction):
        assert "Traceback" not in proc.stderr(), proc.stderr()
