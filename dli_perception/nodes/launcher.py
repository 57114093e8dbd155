"""Console-script targets of the nodes: catch a stop request from the first instant.

A node module imports rclpy, NumPy and OpenCV before its ``main`` can install the runtime's
signal handlers, which takes a second or two on a small computer. A Ctrl-C in that window
would end the process with a ``KeyboardInterrupt`` traceback and exit code -2. These targets
import nothing heavy: they first install handlers that only record the request
(:data:`EARLY_STOP`), then import the node module and run its ``main``; the runtime sees the
recorded request and shuts down cleanly at once.
"""

from __future__ import annotations

import importlib
import signal
import threading

EARLY_STOP = threading.Event()
"""Set when SIGINT or SIGTERM arrived before the runtime installed its own handlers."""

NODE_MODULES = ("camera_node", "recorder_node", "trainer_node", "classifier_node", "reaction_node")


def _record(_signum, _frame) -> None:
    EARLY_STOP.set()


def run(name: str) -> int:
    """Install the early handlers, import ``dli_perception.nodes.<name>`` and run its ``main()``."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _record)
        signal.signal(signal.SIGTERM, _record)
    return importlib.import_module(f"dli_perception.nodes.{name}").main()


def _target(name: str):
    def main() -> int:
        return run(name)

    main.__name__ = name
    main.__doc__ = f"Console script ``{name}``."
    return main


for _name in NODE_MODULES:
    globals()[_name] = _target(_name)
