"""What :class:`~dli_perception.graph_client.Teacher` hands back and whom it addresses.

:class:`Result` and :class:`Reply` (the outcome of one request), :class:`NodeHealth` (a node's
latest ``/diagnostics`` status) and :class:`NodeNames` (the nodes it talks to). Plain values:
nothing here imports rclpy. :mod:`dli_perception.graph_client` re-exports every name.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

HEALTH_STALE_S = 3.0
"""A node whose last ``/diagnostics`` status is older than this is reported stale (it publishes every 1 s)."""
LEVELS = {0: "ok", 1: "warn", 2: "error", 3: "stale"}


class Result(enum.Enum):
    """What became of one request."""

    SUCCEEDED = "succeeded"
    REFUSED = "refused"  # the node answered no; the message says why
    UNAVAILABLE = "unavailable"  # the node or its service is not on the graph
    TIMED_OUT = "timed_out"  # no answer within the deadline
    INVALID = "invalid"  # refused here before anything was sent (bad input)


@dataclass(frozen=True)
class Reply:
    """A :class:`Result`, the node's (or our) message, and the file a capture or undo touched."""

    result: Result
    message: str
    path: str = ""

    @property
    def ok(self) -> bool:
        return self.result is Result.SUCCEEDED


@dataclass(frozen=True)
class NodeHealth:
    """A node's latest ``/diagnostics`` status: level ``ok``/``warn``/``error``/``stale``, message, values."""

    name: str
    level: str
    message: str
    values: dict[str, str]
    received: float  # time.monotonic()

    def age_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.received

    def current_level(self, now: float | None = None) -> str:
        """``level``, or ``gone`` when nothing came for :data:`HEALTH_STALE_S` seconds."""
        return "gone" if self.age_s(now) > HEALTH_STALE_S else self.level


@dataclass(frozen=True)
class NodeNames:
    """Names of the nodes the client talks to (change them when the nodes were renamed at launch)."""

    recorder: str = "recorder_node"
    trainer: str = "trainer_node"
    classifier: str = "classifier_node"
    reaction: str = "reaction_node"
    camera: str = "camera_node"

    def all(self) -> tuple[str, ...]:
        return (self.camera, self.recorder, self.trainer, self.classifier, self.reaction)
