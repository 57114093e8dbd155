"""Shared fixtures: an isolated ROS domain per test session, private rclpy contexts, node processes."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))

# One ROS domain per test session, discovery kept on this host, and the package's Fast DDS
# profile, all set before any rclpy context exists in this process or its children.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1") if os.environ.get("ROS_DISTRO") == "humble" else None
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

from dli_perception import transport  # noqa: E402

transport.apply_default_profile()


@pytest.fixture
def ros_context():
    """A private, initialised rclpy Context (no signal handlers), shut down after the test."""
    from graphutil import new_context

    ctx = new_context()
    yield ctx
    ctx.try_shutdown()


@pytest.fixture
def node_process():
    """Start node entry points as real processes; every one left is stopped at teardown."""
    from graphutil import NodeProcess

    started: list[NodeProcess] = []

    def start(executable: str, *ros_args: str, **kw) -> NodeProcess:
        proc = NodeProcess(executable, list(ros_args), **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
