"""How the demo tells its story: to a :class:`DemoOutput` (the command prints) and to ``demo.log``.

Node log messages reach ``demo.log`` through ``/rosout`` (:meth:`StoryLog.node_message`); their errors
are also told on the console. This module never prints itself.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

ROS_LEVELS = {10: logging.DEBUG, 20: logging.INFO, 30: logging.WARNING, 40: logging.ERROR}
"""rcl log levels (``rcl_interfaces/Log``) as Python's."""


class ProgressLike(Protocol):
    def update_to(self, done: int, total: int | None = None, **postfix: Any) -> None: ...

    def close(self) -> None: ...


class DemoOutput(Protocol):
    """Where the demo reports to (the command prints; tests may collect)."""

    def say(self, text: str) -> None:
        """One line (or block) of the story."""

    def progress(self, total: int | None, desc: str, unit: str = "it") -> ProgressLike:
        """A progress bar."""

    def training_progress(self) -> Callable[[Any], None]:
        """A callable taking :class:`~dli_perception.core.contracts.TrainProgress` events, with ``close()``."""


class StoryLog:
    """The story to ``output`` and ``demo.log``; the package's and the nodes' log messages to ``demo.log``."""

    def __init__(self, output: DemoOutput, logger_name: str = "dli_perception.demo") -> None:
        self.output = output
        self._story = logging.getLogger(f"{logger_name}.story")
        self._ros_log = logging.getLogger(f"{logger_name}.ros")
        self._handler: logging.Handler | None = None
        self._saved_level = logging.NOTSET

    def open(self, path: Path) -> None:
        """Start writing ``path`` (replaced): the story, the package's INFO and above, every node message."""
        handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        package = logging.getLogger("dli_perception")
        self._saved_level = package.level
        if package.getEffectiveLevel() > logging.INFO:
            package.setLevel(logging.INFO)
        package.addHandler(handler)
        # Node messages go to demo.log only (the demo reports errors itself), not to the console handlers.
        self._ros_log.propagate = False
        self._ros_log.addHandler(handler)
        self._ros_log.setLevel(logging.DEBUG)
        self._handler = handler

    def close(self) -> None:
        if self._handler is not None:
            package = logging.getLogger("dli_perception")
            package.removeHandler(self._handler)
            package.setLevel(self._saved_level)
            self._ros_log.removeHandler(self._handler)
            self._ros_log.propagate = True
            self._handler.close()
            self._handler = None

    def say(self, text: str) -> None:
        """Tell ``text`` (lines) to the output and the log."""
        for line in text.strip("\n").splitlines() or [""]:
            self._story.info(line)
        self.output.say(text)

    def node_message(self, name: str, level: int, text: str) -> None:
        """One ``/rosout`` message of a node (logger ``name``, rcl ``level``): logged; errors also told."""
        py_level = ROS_LEVELS.get(level, logging.CRITICAL if level >= 50 else logging.INFO)
        self._ros_log.log(py_level, "[%s] %s", name, text)
        if py_level >= logging.ERROR:
            self.output.say(f"      [{name.rsplit('.', 1)[-1]}] error: {text}")


def describe_action(action: Any) -> str:
    """A reaction table action in words: ``stop``, or its velocities (and duration)."""
    if not action.moves:
        return "stop"
    text = f"linear.x {action.linear_x:+.2f} m/s, angular.z {action.angular_z:+.2f} rad/s"
    return text + (f" for {action.duration_s:g} s" if action.duration_s is not None else "")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
