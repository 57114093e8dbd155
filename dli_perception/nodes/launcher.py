"""Console-script targets of the nodes: catch a stop request from the first instant.

A node module imports rclpy, NumPy and OpenCV before its ``main`` can install the runtime's
signal handlers, which takes a second or two on a small computer. A Ctrl-C in that window
would end the process with a ``KeyboardInterrupt`` traceback and exit code -2. These targets
import nothing heavy: they first install handlers that only record the request
(:data:`EARLY_STOP`), then import the node module and run its ``main``; the runtime sees the
recorded request and shuts down cleanly at once.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator

EARLY_STOP = threading.Event()
"""Set when SIGINT or SIGTERM arrived before the runtime installed its own handlers."""

NODE_MODULES = ("camera_node", "recorder_node", "trainer_node", "classifier_node", "reaction_node")


def _record(_signum, _frame) -> None:
    EARLY_STOP.set()


def install() -> dict:
    """Record SIGINT and SIGTERM in :data:`EARLY_STOP` from now on (main thread only; else a no-op).

    Returns the handlers it replaced, for :func:`uninstall`.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _record)
    return previous


def uninstall(previous: dict) -> None:
    """Put back the handlers :func:`install` replaced, where its own are still in place.

    A handler the runtime set since (``SIG_IGN`` while a stopped process ends) stays: only a caller
    that goes on living (a test, an in-process call that returned without a signal) gets its own back.
    """
    if threading.current_thread() is threading.main_thread() and not EARLY_STOP.is_set():
        for sig, handler in previous.items():
            if signal.getsignal(sig) is _record and handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def early_stop_handlers() -> Iterator[None]:
    """While active, SIGINT and SIGTERM are recorded in :data:`EARLY_STOP` (:func:`install`, then :func:`uninstall`).

    For a long-running command's ``main`` (``dli-perception up`` and ``teach``): enter it before the
    slow imports and the start, so that a stop at any moment of them ends in exit code 0.
    """
    previous = install()
    try:
        yield
    finally:
        uninstall(previous)


def run_main(module: str) -> int:
    """Install the early handlers, import ``module`` and return what its ``main()`` returns."""
    install()
    return importlib.import_module(module).main()


def run(name: str) -> int:
    """Install the early handlers, import ``dli_perception.nodes.<name>`` and run its ``main()``."""
    return run_main(f"dli_perception.nodes.{name}")


def teach_station() -> int:
    """Console script ``teach_station`` and ``python -m dli_perception.teach``: the teach station's page.

    The same as ``dli-perception teach`` with the same options (launch/teach.launch.py runs it with
    ``--connect``), with the early handlers in place before its imports.
    """
    return run_main("dli_perception.commands.teach")


def _target(name: str):
    def main() -> int:
        return run(name)

    main.__name__ = name
    main.__doc__ = f"Console script ``{name}``."
    return main


for _name in NODE_MODULES:
    globals()[_name] = _target(_name)
