"""A node process whose cleanup blocks still ends, within the shutdown limit, with its exit code.

Under ``ros2 launch`` a node that blocks while stopping (a middleware call waiting on a peer that
vanished during the same Ctrl-C) used to ignore launch's SIGTERM, as it was already stopping, until
SIGKILL ended it after 15 s. Here a node's ``destroy_node`` blocks on purpose: once in a call that
releases the GIL (the Python watchdog ends the process with exit 0 and says where it was), once in
one that holds it (faulthandler's native timer ends it 3 s later with exit 1 and every thread's stack).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from procutil import kill_group

from dli_perception.errors import ConfigError
from dli_perception.nodes import runtime

pytestmark = pytest.mark.graph

NODE = textwrap.dedent(
    """
    import re, sys, time
    from rclpy.node import Node
    from dli_perception.nodes.runtime import run_nodes

    class Stuck(Node):
        def __init__(self):
            super().__init__("stuck_cleanup")
            print("ready", flush=True)

        def destroy_node(self):
            print("cleanup starts", flush=True)
            if sys.argv[1] == "gil":
                re.match(r"(a+)+$", "a" * 64 + "b")  # backtracks for hours, holding the GIL
            else:
                time.sleep(600)
            super().destroy_node()

    sys.exit(run_nodes([Stuck], args=["stuck"], until_exit=True))
    """
)


def _stop_stuck(how: str, limit_s: float) -> tuple[int, float, str, str]:
    env = {**os.environ, runtime.SHUTDOWN_LIMIT_ENV: str(limit_s), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        os.kill(proc.pid, signal.SIGINT)
        started = time.monotonic()
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)  # as launch escalates: ignored, the process is already stopping
        out, err = proc.communicate(timeout=60)
        return proc.returncode, time.monotonic() - started, out, err
    finally:
        kill_group(proc)


def test_cleanup_blocked_outside_the_gil_ends_at_the_limit_with_exit_0_and_says_where():
    rc, took, out, err = _stop_stuck("sleep", 2.0)
    assert rc == 0, err
    assert 1.9 < took < 10.0, took
    assert "cleanup starts" in out
    assert "[WARN] shutdown still running after 2 s" in err and "destroy_node" in err, err
    assert "Traceback" not in err, err


def test_cleanup_blocked_holding_the_gil_still_ends_3_s_after_the_limit():
    rc, took, out, err = _stop_stuck("gil", 1.0)
    assert rc == 1, err
    assert 3.9 < took < 15.0, took
    assert "Timeout" in err and "destroy_node" in err, err  # faulthandler's dump of every thread


def test_a_caller_that_goes_on_living_is_not_ended_by_the_limit(monkeypatch):
    """run_nodes called in-process (the runner, tests) disarms the limit when it returns."""
    monkeypatch.setenv(runtime.SHUTDOWN_LIMIT_ENV, "0.2")

    def refuses():
        raise ConfigError("refused at start-up, as a bad parameter would be")

    assert runtime.run_nodes([refuses], args=["limit_test"]) == 1
    time.sleep(3.6)  # past the limit and past faulthandler's 3 s more: this process must still be here
    assert runtime.shutdown_limit_s() == pytest.approx(0.2)


def test_the_limit_comes_from_the_environment_and_falls_back_on_nonsense(monkeypatch):
    monkeypatch.delenv(runtime.SHUTDOWN_LIMIT_ENV, raising=False)
    assert runtime.shutdown_limit_s() == runtime.SHUTDOWN_LIMIT_S
    for bad in ("soon", "-1", "0"):
        monkeypatch.setenv(runtime.SHUTDOWN_LIMIT_ENV, bad)
        assert runtime.shutdown_limit_s() == runtime.SHUTDOWN_LIMIT_S
