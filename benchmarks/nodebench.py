"""Pieces the node benchmarks share (``node_pipeline.py``, ``runner.py``).

Imported as a sibling module: the benchmarks run as scripts (``.venv/bin/python benchmarks/X.py``), so
this folder is first on ``sys.path``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15)


def stop_processes(procs: Iterable[subprocess.Popen], timeout_s: float = 20.0) -> None:
    """SIGINT to each node process still running, then wait for each; one that outlives ``timeout_s`` is killed."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class SpunNode:
    """An rclpy node in this process, spun on its own thread once :meth:`start_spinning` is called."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name)
        self.lock = threading.Lock()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def start_spinning(self) -> None:
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.node.destroy_node()
        rclpy.try_shutdown()
