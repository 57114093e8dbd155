"""Process helpers the tests share that need no ROS (graph helpers are in graphutil.py)."""

from __future__ import annotations

import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen, wait_s: float = 5.0) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session=True``) if it still runs, and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=wait_s)
