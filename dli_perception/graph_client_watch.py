"""What :class:`~dli_perception.graph_client.Teacher` hears beyond the newest results, and waits on them.

:class:`Watching` is a part of ``Teacher`` (a mixin; it uses the client's node, lock and waits): the
camera's frames and ``camera_info``, the models announced on ``model_updated``, every command on
``cmd_vel``, the namespace's log lines, and,
when the client was made with ``history=N``, the last N values of every kind it decodes (counts,
scores, train status, reaction state ..., and each node's ``/diagnostics`` statuses) so that a
caller can check a sequence, not only the newest value. Every wait has a deadline, returns the value it waited for (or
None at the deadline, the reason then in ``last_error``) and ends at once when the client closes or
is interrupted.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from dli_perception.core.contracts import ClassList, Counts, ReactionState, Scores, stamp_ns_of
from dli_perception.graph_client_types import NodeHealth


class Watching:
    """Frames, camera, velocity and log watches, histories and the waits on them; see the module docstring."""

    # Set by Teacher.__init__ (the one owner of these): node, namespace, last_error, _lock, _latest, _wait,
    # _decoder, _frame_subs, _watching, _stamped, _twist_types, _status_name, health.
    _history: dict[str, collections.deque]
    _history_limit: int

    # -- histories ------------------------------------------------------------------------------
    def _record(self, kind: str, value: Any) -> None:
        """Keep ``value`` in the history of ``kind`` (called with ``self._lock`` held).

        ``health`` is kept per status name (every node's own last N), so a busy node cannot push another's out.
        """
        if self._history_limit:
            key = f"health:{value.name}" if kind == "health" else kind
            self._history.setdefault(key, collections.deque(maxlen=self._history_limit)).append(value)

    def history(self, kind: str, start: int = 0) -> list[Any]:
        """Every value of ``kind`` received (oldest first, from index ``start``), at most ``history`` of them.

        Empty unless the client was made with ``history=N`` (N > 0). For ``/diagnostics`` see
        :meth:`health_history`.
        """
        with self._lock:
            return list(self._history.get(kind, ()))[start:]

    def health_history(self, node: str, start: int = 0) -> list[NodeHealth]:
        """The ``/diagnostics`` statuses of ``node`` (a name of :attr:`names`) received, oldest first."""
        return self.history(f"health:{self._status_name(node)}", start)

    def wait_for_value(
        self, kind: str, predicate: Callable[[Any], bool], timeout_s: float = 10.0, *, start: int | None = None
    ) -> Any | None:
        """The first value of ``kind`` for which ``predicate`` holds, or None at the deadline.

        With ``start`` (an index into :meth:`history`) every value received from there on is looked at,
        so a short-lived value replaced before a poll still counts; without it, the newest value only.
        """

        def found() -> Any | None:
            if start is None:
                value = self.latest(kind)
                return value if value is not None and predicate(value) else None
            return next((v for v in self.history(kind, start) if predicate(v)), None)

        if not self._wait(lambda: found() is not None, timeout_s):
            self.last_error = f"no {kind} as wanted within {timeout_s:g} s (newest: {self.latest(kind)!r})"
            return None
        return found()

    def wait_for_counts(self, predicate: Callable[[Counts], bool], timeout_s: float = 10.0) -> Counts | None:
        """The recorder's newest counts once ``predicate`` holds for them (e.g. ``lambda c: c.total == 4``)."""
        return self.wait_for_value("counts", predicate, timeout_s)

    def wait_for_classes(self, names: Iterable[str], timeout_s: float = 10.0) -> ClassList | None:
        """The classifier's class list once it is ``names`` (in that order), or None at the deadline."""
        wanted = tuple(names)
        return self.wait_for_value("classes", lambda c: c.names == wanted, timeout_s)

    def wait_for_scores(self, stamp_ns: int | None = None, timeout_s: float = 10.0) -> Scores | None:
        """The classifier's result for the frame stamped ``stamp_ns`` (any new result when None).

        Needs ``history`` to find a result that a newer one replaced before this call looked.
        """
        if stamp_ns is None:
            seen = self.received_at("scores") or 0.0
            return self.wait_for_value("scores", lambda _s: (self.received_at("scores") or 0.0) > seen, timeout_s)
        start = 0 if self._history_limit else None
        return self.wait_for_value("scores", lambda s: s.stamp_ns == stamp_ns, timeout_s, start=start)

    def wait_for_reaction(
        self, predicate: Callable[[ReactionState], bool], timeout_s: float = 10.0, *, start: int | None = None
    ) -> ReactionState | None:
        """The reaction node's state once ``predicate`` holds (``start``: look through the history from there)."""
        return self.wait_for_value("reaction_state", predicate, timeout_s, start=start)

    def wait_for_health(
        self, node: str, predicate: Callable[[NodeHealth], bool], timeout_s: float = 10.0
    ) -> NodeHealth | None:
        """The newest ``/diagnostics`` status of ``node`` once ``predicate`` holds for it."""

        def found() -> NodeHealth | None:
            health = self.node_health(node)
            return health if health is not None and predicate(health) else None

        if not self._wait(lambda: found() is not None, timeout_s):
            self.last_error = f"no {node} status as wanted within {timeout_s:g} s (newest: {self.node_health(node)})"
            return None
        return found()

    def health_value(self, node: str, key: str, default: str = "") -> str:
        """``key`` of the newest ``/diagnostics`` status of ``node`` (``default`` when none or absent)."""
        health = self.node_health(node)
        return health.values.get(key, default) if health is not None else default

    # -- frames ---------------------------------------------------------------------------------
    def watch_frames(self, topic: str, callback: Callable[[Any], None]) -> None:
        """Call ``callback(msg)`` with each sensor_msgs/Image on ``topic`` (sensor-data QoS, newest only)."""
        from sensor_msgs.msg import Image

        from dli_perception.nodes.qos import SENSOR_DATA

        self._frame_subs.append(self.node.create_subscription(Image, topic, callback, SENSOR_DATA))

    def watch_camera(self, topic: str = "camera_info") -> None:
        """Start listening to the camera's ``camera_info`` (idempotent); :meth:`wait_for_camera` reads it."""
        from sensor_msgs.msg import CameraInfo

        from dli_perception.nodes.qos import SENSOR_DATA

        if "camera" in self._watching:
            return
        self._watching.add("camera")

        def on_info(msg: Any) -> None:
            stamp = stamp_ns_of(msg.header)
            with self._lock:
                first = self._latest.get("camera_first_stamp_ns")
                if first is None or stamp < first:
                    self._latest["camera_first_stamp_ns"] = stamp

        self._frame_subs.append(self.node.create_subscription(CameraInfo, topic, on_info, SENSOR_DATA))

    def wait_for_camera(self, timeout_s: float = 10.0) -> int | None:
        """Wait until the camera publishes; the stamp (ns) of the earliest frame heard, or None at the deadline.

        Listens from the first call of this or :meth:`watch_camera` (call that before the camera starts to
        hear its very first frame).
        """
        self.watch_camera()
        if not self._wait(lambda: self.latest("camera_first_stamp_ns") is not None, timeout_s):
            self.last_error = f"no camera frame within {timeout_s:g} s"
            return None
        return self.latest("camera_first_stamp_ns")

    def watch_models(self) -> None:
        """Start listening to ``model_updated`` (idempotent): kind ``model_updated`` is each model directory announced.

        The trainer announces every model it exported there (and this client's own :meth:`switch_model`
        is heard too); :meth:`latest` and :meth:`history` read them.
        """
        from std_msgs.msg import String

        from dli_perception.nodes.qos import EVENTS

        if "models" in self._watching:
            return
        self._watching.add("models")
        on_model = self._decoder("model_updated", str)
        self._frame_subs.append(self.node.create_subscription(String, "model_updated", on_model, EVENTS))

    def watch_velocity(self, callback: Callable[[float, float], None]) -> None:
        """Call ``callback(linear_x m/s, angular_z rad/s)`` for every command on ``cmd_vel`` (anyone's)."""
        from dli_perception.nodes.qos import EVENTS

        twist_cls, stamped_cls = self._twist_types

        def on_cmd(msg: Any) -> None:
            twist = msg.twist if self._stamped else msg
            callback(twist.linear.x, twist.angular.z)

        self._frame_subs.append(
            self.node.create_subscription(stamped_cls if self._stamped else twist_cls, "cmd_vel", on_cmd, EVENTS)
        )

    def watch_log(self, callback: Callable[[str, int, str], None]) -> None:
        """Call ``callback(logger name, level, text)`` for the log messages of this namespace's nodes (``/rosout``).

        Levels are rcl's (10 debug, 20 info, 30 warn, 40 error, 50 fatal); messages logged before the
        subscription matched still arrive (the ROSOUT profile keeps them).
        """
        from rcl_interfaces.msg import Log

        from dli_perception.nodes.qos import ROSOUT

        prefix = self.namespace.strip("/").replace("/", ".") + "." if self.namespace else ""

        def on_log(msg: Any) -> None:
            if prefix and not msg.name.startswith(prefix):
                return  # another namespace's (or process's) node
            callback(msg.name, int(msg.level), msg.msg)

        self._frame_subs.append(self.node.create_subscription(Log, "/rosout", on_log, ROSOUT))
