"""Helpers for tests that spin real rclpy nodes: private contexts, spinners, deadlines, node processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import rclpy
from procutil import kill_group, wait_for  # noqa: F401 - wait_for is used by the tests from here
from rclpy.context import Context
from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

DISCOVERY_S = 20.0
"""Deadline for the first message across processes (discovery took up to ~3 s on 2 shared cores)."""
DEADLINE_S = 10.0
"""Deadline for an answer once the graph is connected."""


def new_context() -> Context:
    """An initialised private Context that installs no signal handlers."""
    from rclpy.signals import SignalHandlerOptions

    ctx = Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    return ctx


def unique_ns(prefix: str) -> str:
    """A fresh namespace ``/<prefix>_<8 hex digits>``, so tests on one ROS domain never share topics."""
    return f"/{prefix}_{uuid.uuid4().hex[:8]}"


def ros_args(values: Mapping[str, object] | None = None, /, **more: object) -> list[str]:
    """``-p name:=value`` arguments for a node process: booleans as ``true``/``false``, lists as JSON.

    Names are taken from ``values`` (any name, dotted ones such as ``synthetic.seed`` included), then ``more``.
    """
    out: list[str] = []
    for name, value in {**(values or {}), **more}.items():
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, list):
            text = json.dumps(value)
        else:
            text = str(value)
        out += ["-p", f"{name}:={text}"]
    return out


def overrides(values: Mapping[str, object]) -> list[Parameter]:
    """``parameter_overrides`` for a node built in the test: one Parameter per name (dotted ones included)."""
    return [Parameter(name, value=value) for name, value in values.items()]


def scene_camera_args(period_s: float, more: Mapping[str, object] | None = None) -> list[str]:
    """``-p`` arguments of a small synthetic camera_node (64x48, 10 fps) showing ``free`` and ``blocked`` in turn.

    Each scene lasts ``period_s`` seconds; ``more`` adds or replaces parameters.
    """
    scene = {"width": 64, "height": 48, "fps": 10.0, "synthetic.scene_period_s": period_s}
    return ros_args({**scene, "synthetic.classes": ["free", "blocked"], **(more or {})})


@contextlib.contextmanager
def repeating(action: Callable[[], object], period_s: float) -> Iterator[None]:
    """Call ``action()`` every ``period_s`` seconds on a thread while the block runs (a camera, a label stream)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(period_s):
            action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5.0)


def seen(collector: "Collector", predicate: Callable[[object], bool], start: int = 0) -> bool:
    """True when some message ``collector`` received from index ``start`` on satisfies ``predicate``.

    Asserting over the received history, not the last message, holds on a loaded machine where a
    short-lived state (0.5 s before a watchdog fires) may be replaced before a poll reads it.
    """
    return any(predicate(m) for m in list(collector.msgs)[start:])


def wait_seen(collector: "Collector", predicate: Callable[[object], bool], timeout: float, start: int = 0) -> bool:
    """Poll until :func:`seen` holds or ``timeout`` seconds pass."""
    return wait_for(lambda: seen(collector, predicate, start), timeout)


class Spinner:
    """Spins nodes of one context in a background thread; ``with Spinner(ctx, a, b): ...``.

    In a SingleThreadedExecutor by default, as every node process (``up``, ``teach`` and the demo too)
    runs its nodes. ``threads=N`` uses rclpy's MultiThreadedExecutor instead, for a test that checks a
    node under it.
    That executor can fall into spinning on a ready entity it cannot dispatch yet, taking a whole core and
    starving the timers of every node in the process (measured with four nodes of the regression demo:
    50-90 % of a core and a third of the timer rates, where the single-threaded executor took 12 % and kept
    them), which made closed-loop tests fail on a quiet machine.
    """

    def __init__(self, context: Context, *nodes: Node, threads: int | None = None) -> None:
        self.executor: Executor = (
            SingleThreadedExecutor(context=context)
            if threads is None
            else MultiThreadedExecutor(num_threads=threads, context=context)
        )
        self.nodes = list(nodes)
        for node in nodes:
            self.executor.add_node(node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._owned: list = []

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def own(self, thing):
        """Close ``thing`` (a graph client) when the spinner ends, before its nodes are destroyed; returns it."""
        self._owned.append(thing)
        return thing

    def destroy(self, node: Node) -> None:
        """Take ``node`` out of the executor and destroy it while the other nodes keep spinning.

        What the node sends while it is destroyed (a final zero Twist) still reaches collectors.
        """
        self.executor.remove_node(node)
        self.nodes.remove(node)
        node.destroy_node()

    def __enter__(self) -> "Spinner":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for thing in reversed(self._owned):
            thing.close()
        self._stop.set()
        self._thread.join(timeout=5.0)
        for node in reversed(self.nodes):
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown(timeout_sec=2.0)


class Collector(Node):
    """Subscribes to one topic and keeps every message with its receive time (time.time_ns)."""

    def __init__(self, context: Context, msg_type, topic: str, qos, name: str = "collector") -> None:
        super().__init__(name, context=context)
        self.msgs: list = []
        self.received_ns: list[int] = []
        self._lock = threading.Lock()
        self.subscription = self.create_subscription(msg_type, topic, self._on_msg, qos)

    def _on_msg(self, msg) -> None:
        with self._lock:
            self.received_ns.append(time.time_ns())
            self.msgs.append(msg)

    def count(self) -> int:
        with self._lock:
            return len(self.msgs)


HISTORY = 100_000
"""Values of each kind a test's graph client keeps (tests check sequences, not only the newest value)."""


def graph_client(context: Context, ns: str = "", **kw):
    """The package's graph client (``Teacher``) on the test's context, for the nodes in ``ns``, keeping history.

    Use it as a context manager (``with graph_client(ctx, ns) as teacher:``) so that it is closed.
    """
    from dli_perception.graph_client import Teacher

    return Teacher(ns, context=context, history=HISTORY, **{"node_name": "test_client", **kw})


def refused(reply, *words: str) -> bool:
    """The node answered a graph client call with no (``Result.REFUSED``), its reason holding every one of ``words``."""
    from dli_perception.graph_client import Result

    return reply.result is Result.REFUSED and all(w in reply.message for w in words)


class FrameSource(Node):
    """The camera's side of a test graph, and anyone else's raw text: what the graph client does not send.

    ``image_pub`` publishes frames as they are (bad ones included) on ``image_raw``; ``label_pub`` and
    ``model_pub`` publish raw text on ``teach_label`` and ``model_updated``, as any node on the graph may
    (labels :meth:`Teacher.set_label <dli_perception.graph_client.Teacher.set_label>` refuses before
    sending, such as ``../x``, included). Everything a test reads back goes through the graph client.
    """

    def __init__(self, context: Context, ns: str = "", name: str = "frame_source") -> None:
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from dli_perception.nodes.qos import EVENTS, SENSOR_DATA

        super().__init__(name, context=context, namespace=ns or "/")
        self._string = String
        self.image_pub = self.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.label_pub = self.create_publisher(String, "teach_label", EVENTS)
        self.model_pub = self.create_publisher(String, "model_updated", EVENTS)

    def say_label(self, teacher, label: str, node: str = "recorder_node") -> None:
        """Publish ``label`` as it is until the recorder reports it (through ``teacher``) as its current label.

        ``none``, ``unknown`` and blank clear the label (reported as empty), as the recorder reads them.
        """
        want = "" if label.strip().casefold() in ("", "none", "unknown") else label.strip()

        def step() -> bool:
            self.label_pub.publish(self._string(data=label))
            health = teacher.node_health(node)
            return health is not None and health.values.get("label") == want

        assert wait_for(step, DISCOVERY_S, interval=0.05), (
            f"{node} never reported label {want!r}: {teacher.node_health(node)}"
        )


def entry_point(name: str) -> str:
    """Path of an installed console script in this environment (the venv's bin directory)."""
    path = Path(sys.prefix) / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: install the package (scripts/setup_venv.sh)")
    return str(path)


class NodeProcess:
    """A node entry point running as its own process, with stdout/stderr captured to files."""

    def __init__(
        self,
        executable: str,
        ros_args: list[str],
        env: dict | None = None,
        cwd: str | None = None,
        args: list[str] | None = None,
    ) -> None:
        """``args`` go right after the executable (a command's options), ``ros_args`` after ``--ros-args``."""
        self.dir = Path(tempfile.mkdtemp(prefix="dli_node_"))
        self.stdout_path = self.dir / "stdout.txt"
        self.stderr_path = self.dir / "stderr.txt"
        cmd = [entry_point(executable) if "/" not in executable else executable, *(args or [])]
        if ros_args:
            cmd += ["--ros-args", *ros_args]
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.stdout_path, "wb"),
            stderr=open(self.stderr_path, "wb"),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def output(self) -> str:
        return self.stdout() + self.stderr()

    def kill(self) -> None:
        kill_group(self.proc)


def stop_and_check(proc: NodeProcess, mode: str, timeout: float = 15.0) -> int:
    """Stop a node process the way launch/a terminal does; ``mode`` is int, int2 or term. Returns rc."""
    if mode == "int":
        proc.send(signal.SIGINT)
    elif mode == "int2":
        proc.send(signal.SIGINT)
        time.sleep(0.005)
        proc.send(signal.SIGINT)
    elif mode == "term":
        proc.send(signal.SIGTERM)
    else:
        raise ValueError(mode)
    return proc.wait(timeout=timeout)
