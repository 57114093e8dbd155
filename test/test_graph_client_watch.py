"""The graph client on its caller's context (as the demo runs it) and the runtime's background spinner.

Real nodes and topics in one private context: ``Teacher.watch_camera``/``wait_for_camera``,
``watch_velocity`` and ``watch_log`` hear what a node publishes; ``history=N`` keeps the last N
values and the waits find them; ``close()`` leaves the caller's context running; ``BackgroundSpin``
keeps spinning after a callback raised.
"""

from __future__ import annotations

import logging

import pytest
from geometry_msgs.msg import Twist, Vector3
from graphutil import unique_ns, wait_for
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String

from dli_perception.graph_client import Teacher
from dli_perception.nodes.qos import EVENTS, SENSOR_DATA
from dli_perception.nodes.runtime import BackgroundSpin

DEADLINE = 20.0


@pytest.mark.graph
def test_a_client_on_the_callers_context_hears_the_camera_the_velocity_and_its_namespace_log(ros_context):
    ns = unique_ns("watch")
    source = Node("source", namespace=ns, context=ros_context)
    other = Node("source", namespace=ns + "_other", context=ros_context)
    info_pub = source.create_publisher(CameraInfo, "camera_info", SENSOR_DATA)
    cmd_pub = source.create_publisher(Twist, "cmd_vel", EVENTS)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(source)
    executor.add_node(other)
    spin = BackgroundSpin(executor, ros_context, name="test_spin")
    teacher = Teacher(ns, node_name="watcher", context=ros_context)
    logs: list[tuple[str, int, str]] = []
    velocities: list[tuple[float, float]] = []
    teacher.watch_log(lambda name, level, text: logs.append((name, level, text)))
    teacher.watch_velocity(lambda v, w: velocities.append((v, w)))

    def info(sec: int) -> None:
        msg = CameraInfo()
        msg.header.stamp.sec = sec
        info_pub.publish(msg)

    try:
        assert teacher.wait_for_camera(0.2) is None  # nothing published yet: None at the deadline
        assert "no camera frame" in teacher.last_error
        assert wait_for(lambda: (info(50), teacher.wait_for_camera(0.05))[1] is not None, DEADLINE)
        assert teacher.wait_for_camera(0.0) == 50_000_000_000
        # the earliest stamp heard is kept: an earlier one replaces it, a later one does not
        assert wait_for(lambda: (info(30), teacher.wait_for_camera(0.0))[1] == 30_000_000_000, DEADLINE)
        info(90)
        assert wait_for(lambda: (info(90), teacher.wait_for_camera(0.0))[1] == 30_000_000_000, 1.0)

        command = Twist(linear=Vector3(x=0.25), angular=Vector3(z=-0.5))
        assert wait_for(lambda: (cmd_pub.publish(command), bool(velocities))[1], DEADLINE)
        assert velocities[-1] == (0.25, -0.5)

        other.get_logger().error("from another namespace")
        source.get_logger().error("from the watched namespace")
        assert wait_for(lambda: any(text == "from the watched namespace" for _, _, text in logs), DEADLINE), logs
        source.get_logger().warning("a second one")
        assert wait_for(lambda: any(text == "a second one" for _, _, text in logs), DEADLINE), logs
        watched = [entry for entry in logs if entry[2] == "from the watched namespace"][0]
        assert watched[0] == f"{ns.strip('/')}.source" and watched[1] == 40
        assert not any(text == "from another namespace" for _, _, text in logs), logs
    finally:
        teacher.close()
        assert ros_context.ok()  # the client leaves its caller's context running
        spin.stop()
        for node in (source, other):
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)


@pytest.mark.graph
def test_background_spin_logs_a_callback_error_and_goes_on_spinning(ros_context, caplog):
    ns = unique_ns("spin")
    node = Node("listener", namespace=ns, context=ros_context)
    talker = Node("talker", namespace=ns, context=ros_context)
    heard: list[str] = []

    def on_msg(msg: String) -> None:
        if msg.data == "boom":
            raise RuntimeError("a callback failed")
        heard.append(msg.data)

    node.create_subscription(String, "chatter", on_msg, EVENTS)
    pub = talker.create_publisher(String, "chatter", EVENTS)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(talker)
    spin = BackgroundSpin(executor, ros_context)
    try:
        with caplog.at_level(logging.ERROR, logger="dli_perception.nodes.runtime"):
            assert wait_for(lambda: pub.get_subscription_count() > 0, DEADLINE)
            pub.publish(String(data="boom"))
            assert wait_for(lambda: "a callback failed" in caplog.text, DEADLINE), caplog.text
            assert wait_for(lambda: (pub.publish(String(data="fine")), "fine" in heard)[1], DEADLINE)
    finally:
        spin.stop()
        for n in (node, talker):
            executor.remove_node(n)
            n.destroy_node()
        executor.shutdown(timeout_sec=1.0)
    assert not spin._thread.is_alive()


@pytest.mark.graph
def test_history_keeps_the_last_n_values_and_waits_find_values_a_newer_one_replaced(ros_context):
    """``history=N`` keeps the newest N counts and statuses in order; without it only the newest is kept;
    ``wait_for_value(start=...)`` finds a value that a newer one replaced before the wait looked."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from dli_perception.core.contracts import Counts
    from dli_perception.nodes.qos import LATCHED

    ns = unique_ns("history")
    recorder = Node("recorder_node", namespace=ns, context=ros_context)
    counts_pub = recorder.create_publisher(String, "recorder_node/counts", LATCHED)
    diag_pub = recorder.create_publisher(DiagnosticArray, "/diagnostics", EVENTS)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(recorder)
    spin = BackgroundSpin(executor, ros_context)
    keeping = Teacher(ns, node_name="keeping", context=ros_context, history=3)
    newest_only = Teacher(ns, node_name="newest_only", context=ros_context)
    try:
        assert wait_for(lambda: counts_pub.get_subscription_count() >= 2, DEADLINE)
        for n in range(1, 6):
            counts_pub.publish(String(data=Counts({"cup": n}).encode()))
            assert wait_for(lambda n=n: keeping.counts() == Counts({"cup": n}), DEADLINE), keeping.counts()
        assert keeping.history("counts") == [Counts({"cup": n}) for n in (3, 4, 5)]  # the last 3, oldest first
        assert keeping.history("counts", 2) == [Counts({"cup": 5})]
        assert wait_for(lambda: newest_only.counts() == Counts({"cup": 5}), DEADLINE)
        assert newest_only.history("counts") == []
        # cup 4 was replaced: only a wait over the history finds it; the newest-value wait does not
        assert keeping.wait_for_value("counts", lambda c: c.total == 4, 1.0, start=0) == Counts({"cup": 4})
        assert keeping.wait_for_counts(lambda c: c.total == 4, 0.2) is None
        assert "no counts as wanted within 0.2 s" in keeping.last_error
        assert keeping.wait_for_counts(lambda c: c.total == 5, 1.0) == Counts({"cup": 5})

        def status(saved: int) -> DiagnosticArray:
            values = [KeyValue(key="saved", value=str(saved))]
            report = DiagnosticStatus(level=DiagnosticStatus.WARN, name=f"{ns.strip('/')}/recorder_node", values=values)
            return DiagnosticArray(status=[report, DiagnosticStatus(name="elsewhere/recorder_node")])

        assert wait_for(lambda: diag_pub.get_subscription_count() >= 2, DEADLINE)
        for saved in (1, 2):
            diag_pub.publish(status(saved))
            saved_is = lambda h, s=saved: h.values.get("saved") == str(s)  # noqa: E731
            assert keeping.wait_for_health("recorder_node", saved_is, DEADLINE), keeping.last_error
        assert [h.values["saved"] for h in keeping.health_history("recorder_node")] == ["1", "2"]
        assert keeping.health_value("recorder_node", "saved") == "2"
        assert keeping.node_health("recorder_node").level == "warn"
        assert newest_only.health_history("recorder_node") == []
    finally:
        keeping.close()
        newest_only.close()
        spin.stop()
        executor.remove_node(recorder)
        recorder.destroy_node()
        executor.shutdown(timeout_sec=1.0)
