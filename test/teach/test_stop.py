"""The teach station ends like every process of the package: exit 0, no traceback, last duties done.

Each way it runs — ``dli-perception teach --connect``, ``python -m dli_perception.teach --connect``
(what launch/teach.launch.py starts) and ``dli-perception teach`` with the teach set's nodes in the
same process — gets one SIGINT or two 5 ms apart while it is still importing and starting (at moments
read from /proc, not guessed with sleeps), and SIGINT, two SIGINTs or SIGTERM while it serves.
The interpreter's own start (before the first line of the package runs) is the one moment no
package can cover; the earliest moment tested is right after the package's handlers are in. In-process, the reaction node's final zero Twist
must still reach a subscriber after the signal.
"""

from __future__ import annotations

import sys
import uuid

import pytest
from geometry_msgs.msg import Twist
from graphutil import Collector, Spinner, stop_and_check, wait_for, wait_seen
from procutil import wait_stage

from dli_perception.nodes.qos import EVENTS

pytestmark = pytest.mark.graph

SERVING = "Open the teach station"
START_S = 90.0  # imports of rclpy, aiohttp (and OpenCV, NumPy, the nodes in-process) on a loaded 2-core machine
STOP_S = 10.0  # launch sends SIGTERM 5 s after the Ctrl-C and SIGKILL later: a clean stop is well inside


def _connect_command(how: str, ns: str) -> tuple[str, list[str]]:
    options = ["--connect", "--port", "0", "--namespace", ns]
    if how == "cli":
        return "dli-perception", ["teach", *options]
    return sys.executable, ["-m", "dli_perception.teach", *options]  # as launch/teach.launch.py runs it


def _in_process_args(tmp_path, ns: str) -> list[str]:
    return [
        "teach",
        "--port",
        "0",
        "--namespace",
        ns,
        f"dataset_dir:={tmp_path / 'data'}",
        f"model_dir:={tmp_path / 'model'}",
        "weights:=none",
        "width:=64",
        "height:=48",
        "fps:=5.0",
    ]


def _start(node_process, tmp_path, how: str):
    ns = f"/teachstop_{uuid.uuid4().hex[:8]}"
    if how == "in-process":
        executable, args = "dli-perception", _in_process_args(tmp_path, ns)
    else:
        executable, args = _connect_command(how, ns)
    proc = node_process(executable, args=args, env={"HOME": str(tmp_path)}, cwd=str(tmp_path))
    return proc, ns


def _assert_clean(proc, rc: int) -> None:
    assert rc == 0, proc.output()[-4000:]
    assert "Traceback" not in proc.stderr(), proc.stderr()[-4000:]


def _wait_serving(proc) -> None:
    assert wait_for(lambda: SERVING in proc.stdout() or proc.proc.poll() is not None, START_S), proc.output()
    assert proc.proc.poll() is None, proc.output()[-4000:]


def _wait_stage(proc, stage: str) -> None:
    """Wait until the process reached ``stage`` of the start (signals are then sent at once)."""
    assert wait_stage(proc.proc, stage, START_S), f"ended before {stage}:\n{proc.output()[-4000:]}"


@pytest.mark.parametrize("how", ["cli", "module"])
@pytest.mark.parametrize("stage", ["handlers", "rclpy-import", "rmw-start"])
@pytest.mark.parametrize("mode", ["int", "int2"])
def test_a_stop_while_importing_or_starting_exits_0_without_traceback(node_process, tmp_path, how, stage, mode):
    proc, _ = _start(node_process, tmp_path, how)
    _wait_stage(proc, stage)
    _assert_clean(proc, stop_and_check(proc, mode, timeout=STOP_S))
    assert SERVING not in proc.stdout(), proc.output()  # it was stopped before it served


@pytest.mark.parametrize(
    ("stage", "mode"), [("handlers", "int"), ("opencv-import", "int2"), ("rmw-start", "int"), ("rmw-start", "term")]
)
def test_in_process_stop_while_importing_or_starting_exits_0_without_traceback(node_process, tmp_path, stage, mode):
    proc, _ = _start(node_process, tmp_path, "in-process")
    _wait_stage(proc, stage)
    _assert_clean(proc, stop_and_check(proc, mode, timeout=30.0))


@pytest.mark.parametrize("how", ["cli", "module"])
@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_a_stop_while_serving_exits_0_without_traceback_and_quickly(node_process, tmp_path, how, mode):
    proc, _ = _start(node_process, tmp_path, how)
    _wait_serving(proc)
    _assert_clean(proc, stop_and_check(proc, mode, timeout=STOP_S))


@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_in_process_stop_while_serving_sends_the_zero_twist(node_process, ros_context, tmp_path, mode):
    proc, ns = _start(node_process, tmp_path, "in-process")
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    with Spinner(ros_context, cmds):
        _wait_serving(proc)
        # the reaction node publishes on every tick: a message received means both ends are matched,
        # so the final one cannot be dropped for want of a known subscriber
        assert wait_for(lambda: cmds.count() > 0 or proc.proc.poll() is not None, START_S), proc.output()[-4000:]
        before = cmds.count()
        _assert_clean(proc, stop_and_check(proc, mode, timeout=STOP_S))
        assert wait_seen(cmds, lambda m: (m.linear.x, m.angular.z) == (0.0, 0.0), timeout=STOP_S, start=before), (
            proc.output()[-4000:]
        )
