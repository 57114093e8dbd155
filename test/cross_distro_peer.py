"""The other distribution's side of test_cross_distro.py, run with the other venv's Python.

Each mode does one thing on the ROS graph with a deadline and prints one JSON line last:

    python cross_distro_peer.py distro
    python cross_distro_peer.py images TOPIC COUNT TIMEOUT_S
    python cross_distro_peer.py capture LABEL_TOPIC LABEL SERVICE TIMEOUT_S

``images`` subscribes with the package's sensor-data QoS and reports what arrived; ``capture``
publishes a teach label (EVENTS QoS) and calls a std_srvs/Trigger service until it succeeds.
Also imported by the test (``ros_distro``, ``peer_env``); rclpy is imported only inside functions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RCLPY_MAJOR_TO_DISTRO = {3: "humble", 4: "iron", 7: "jazzy", 9: "kilted"}
"""ros-rclpy release series of each distribution (the Kilted wheels have no ros-kilted-* meta-packages)."""

BOOTSTRAP_GUARD = "_ROS_WHEELS_BOOTSTRAP_COMPLETE"
"""Set by the ROS wheels after they put their library folders on LD_LIBRARY_PATH and re-executed Python."""


def ros_distro() -> str:
    """The ROS 2 distribution of this Python's rclpy: ``jazzy``, ``kilted``, ... (``unknown`` if none)."""
    from importlib import metadata

    for name in ("humble", "jazzy", "kilted", "rolling"):
        try:
            metadata.version(f"ros-{name}-rclpy")
            return name
        except metadata.PackageNotFoundError:
            pass
    try:
        major = int(metadata.version("ros-rclpy").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return os.environ.get("ROS_DISTRO", "unknown")  # system ROS (apt): rclpy has no wheel metadata
    return RCLPY_MAJOR_TO_DISTRO.get(major, f"rclpy{major}")


def peer_env(repo: Path, extra: dict | None = None) -> dict:
    """This process's environment made fit for a Python of another venv.

    The ROS wheels of this venv put their library folders on LD_LIBRARY_PATH and set a guard so
    children do not redo it; a child from another venv would then skip its own set-up and load
    this venv's ROS libraries (or none: ``libfastrtps.so.2.14: cannot open shared object file``).
    Both are undone here (as values, so the result can be merged over ``os.environ``), and
    ``repo`` goes first on PYTHONPATH so both sides run the same checkout of dli_perception.
    """
    env = dict(os.environ)
    env[BOOTSTRAP_GUARD] = ""  # empty, not removed: callers may merge this over os.environ
    prefix = os.path.realpath(sys.prefix)
    kept = [
        p
        for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep)
        if p and not os.path.realpath(p).startswith(prefix + os.sep)
    ]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _node(name: str):
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    context = Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    return context, Node(name, context=context)


def _spin_until(context, node, done, timeout_s: float) -> bool:
    """Spin ``node`` until ``done()`` (called once per slice) is true or ``timeout_s`` passes."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    finished = False
    try:
        while not (finished := bool(done())) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)
    return finished


def images(topic: str, count: int, timeout_s: float) -> dict:
    from sensor_msgs.msg import Image

    from dli_perception.nodes.qos import SENSOR_DATA

    context, node = _node("cross_distro_image_probe")
    got: list = []
    node.create_subscription(Image, topic, got.append, SENSOR_DATA)
    _spin_until(context, node, lambda: len(got) >= count, timeout_s)
    last = got[-1] if got else None
    result = {
        "count": len(got),
        "width": last.width if last else 0,
        "height": last.height if last else 0,
        "encoding": last.encoding if last else "",
        "frame_id": last.header.frame_id if last else "",
        "data_ok": bool(last) and len(last.data) == last.step * last.height,
    }
    node.destroy_node()
    context.try_shutdown()
    return result


def capture(label_topic: str, label: str, service: str, timeout_s: float) -> dict:
    """Publish ``label`` until the recorder hears it, then call ``service`` until it saves a frame."""
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from dli_perception.nodes.qos import EVENTS

    context, node = _node("cross_distro_teacher")
    pub = node.create_publisher(String, label_topic, EVENTS)
    client = node.create_client(Trigger, service)
    deadline = time.monotonic() + timeout_s
    replies: list[dict] = []
    state: dict = {"future": None, "next_label": 0.0}

    def done() -> bool:
        now = time.monotonic()
        if pub.get_subscription_count() > 0 and now >= state["next_label"]:
            pub.publish(String(data=label))  # repeated: a label sent before the match would be lost
            state["next_label"] = now + 0.2
        future = state["future"]
        if future is not None and future.done():
            reply = future.result()
            replies.append({"success": reply.success, "message": reply.message})
            state["future"] = None
            if reply.success:
                return True
        if state["future"] is None and client.service_is_ready() and pub.get_subscription_count() > 0:
            if not replies or now >= state.get("retry_at", 0.0):
                state["future"] = client.call_async(Trigger.Request())
                state["retry_at"] = now + 0.3
        return False

    ok = _spin_until(context, node, done, max(0.0, deadline - time.monotonic()))
    node.destroy_node()
    context.try_shutdown()
    return {"success": ok, "replies": replies[-5:]}


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "distro":
        import rclpy  # noqa: F401 - proves this venv's rclpy imports

        result: dict = {}
    elif mode == "images":
        result = images(args[0], int(args[1]), float(args[2]))
    elif mode == "capture":
        result = capture(args[0], args[1], args[2], float(args[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    result["distro"] = ros_distro()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
