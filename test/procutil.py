"""Process helpers the tests share that need no ROS (graph helpers are in graphutil.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def kill_group(proc: subprocess.Popen, wait_s: float = 5.0) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session=True``) if it still runs, and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=wait_s)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _catches_sigterm(pid: int) -> bool:
    """The package's first handlers are in (Python itself leaves SIGTERM alone): its earliest moment."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.MULTILINE).group(1), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


# Moments of a process's start-up, seen from outside: the stop handlers just installed, rclpy being
# imported (its native module is mapped), the ROS middleware being started (rclpy.init loads the RMW
# library), OpenCV being imported (in-process: the nodes are being built).
START_STAGES: dict[str, Callable[[int], bool]] = {
    "handlers": _catches_sigterm,
    "rclpy-import": lambda pid: "_rclpy_pybind11" in Path(f"/proc/{pid}/maps").read_text(),
    "rmw-start": lambda pid: re.search(r"librmw_\w+_cpp", Path(f"/proc/{pid}/maps").read_text()) is not None,
    "opencv-import": lambda pid: re.search(r"/cv2[/.]", Path(f"/proc/{pid}/maps").read_text()) is not None,
}


def wait_stage(proc: subprocess.Popen, stage: str, timeout: float) -> bool:
    """Poll every millisecond until ``proc`` reached ``stage`` of :data:`START_STAGES` or ended.

    True when it reached the stage still running (a signal sent now lands in that moment).
    """

    def reached() -> bool:
        try:
            return proc.poll() is not None or START_STAGES[stage](proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            return True

    return wait_for(reached, timeout, interval=0.001) and proc.poll() is None


def interrupt_at(proc: subprocess.Popen, marker: str, settle_s: float, reach_s: float = 120.0) -> tuple[int, str, str]:
    """Ctrl-C twice (5 ms apart: the second must change nothing) ``settle_s`` after ``proc`` prints a line with
    ``marker``; returns its exit status, stdout and stderr (text pipes). Killed if it has not ended 60 s later."""
    import threading

    seen: list[str] = []
    reached = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert reached.wait(reach_s), "".join(seen)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    return rc, "".join(seen), proc.stderr.read()
