"""The regression and multi-label side of :class:`~dli_perception.graph_client.Teacher`.

:class:`TaskTargets` is a part of ``Teacher`` (a mixin; it uses the client's node, lock, names, waits and
replies): it sets the recorder's target point (``target_xy``) or label set (``target_labels``) through the
node's ``set_parameters`` service, tells which task the recorder records, and reads the classifier's
regression (``xy_result``, the ``xy`` point) and multi-label (``label_set``) results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from dli_perception.core.contracts import LabelSet, Scores, XYResult, stamp_ns_of
from dli_perception.graph_client_types import Reply, Result


class TaskTargets:
    """Targets of the regression and multi-label tasks, and their results; see the module docstring."""

    # Set by Teacher.__init__ (the one owner of these): node, names, _lock, _wait, _ending, _fail, _frame_subs,
    # latest, received_at, node_health.

    # -- targets --------------------------------------------------------------------------------
    def set_xy(self, x: float, y: float, timeout_s: float = 3.0) -> Reply:
        """Set the recorder's regression target (normalised, [-1, 1]) through its ``target_xy`` parameter.

        Confirmed by the node's ``set_parameters`` answer within ``timeout_s``; a point outside the
        image, or a recorder that records another task, comes back REFUSED with the node's reason.
        """
        from rcl_interfaces.msg import ParameterType, ParameterValue

        from dli_perception.core.tasks import validate_xy
        from dli_perception.errors import TargetError

        try:
            x, y = validate_xy(x, y)
        except TargetError as exc:
            return self._fail(Reply(Result.INVALID, str(exc)))
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[x, y])
        return self._set_recorder_parameter("target_xy", value, f"teach target xy ({x:.4g}, {y:.4g})", timeout_s)

    def set_labels(self, labels: Iterable[str], timeout_s: float = 3.0) -> Reply:
        """Set the recorder's multi-label target (a set of label names; empty: none shown) through its
        ``target_labels`` parameter, confirmed like :meth:`set_xy` (unknown labels come back REFUSED)."""
        from rcl_interfaces.msg import ParameterType, ParameterValue

        from dli_perception.core.tasks import validate_label_set
        from dli_perception.errors import TargetError

        try:
            names = validate_label_set(labels)
        except TargetError as exc:
            return self._fail(Reply(Result.INVALID, str(exc)))
        value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=list(names))
        return self._set_recorder_parameter("target_labels", value, f"teach labels [{', '.join(names)}]", timeout_s)

    def _set_recorder_parameter(self, name: str, value: Any, done: str, timeout_s: float) -> Reply:
        """Set one recorder parameter through its ``set_parameters`` service, with a deadline."""
        from rcl_interfaces.msg import Parameter
        from rcl_interfaces.srv import SetParameters

        recorder = self.names.recorder
        with self._lock:
            client = getattr(self, "_params_client", None)
            if client is None:
                client = self._params_client = self.node.create_client(SetParameters, f"{recorder}/set_parameters")
        deadline = time.monotonic() + timeout_s
        if not self._wait(client.service_is_ready, timeout_s):
            return self._fail(Reply(Result.UNAVAILABLE, f"{recorder} is not running: no {client.srv_name} service"))
        done_event = threading.Event()
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
        future.add_done_callback(lambda _f: done_event.set())
        while not done_event.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or self._ending():
                future.cancel()
                return self._fail(Reply(Result.TIMED_OUT, f"{recorder} did not confirm {name} within {timeout_s:g} s"))
        response = future.result()
        if response is None or not response.results:
            return self._fail(Reply(Result.UNAVAILABLE, f"{client.srv_name}: the call failed"))
        result = response.results[0]
        if not result.successful:
            return self._fail(Reply(Result.REFUSED, result.reason or f"{recorder} refused {name}"))
        return Reply(Result.SUCCEEDED, done)

    def recorder_task(self) -> str | None:
        """The task the recorder records (``classification``, ``regression``, ``multilabel``), from its
        diagnostics; None before it was heard from."""
        health = self.node_health(self.names.recorder)
        return None if health is None else health.values.get("task") or None

    # -- results --------------------------------------------------------------------------------
    def xy_result(self) -> XYResult | None:
        """The newest result of a regression model (``<classifier>/xy_result``): the smoothed target point."""
        return self.latest("xy_result")

    def label_set(self) -> LabelSet | None:
        """The newest result of a multi-label model (``<classifier>/label_set``): active labels, scores."""
        return self.latest("label_set")

    def served_result(self) -> Scores | XYResult | LabelSet | None:
        """The newest classifier result of whichever task it serves (the one received last), or None."""
        kinds = [(self.received_at(kind), kind) for kind in ("scores", "xy_result", "label_set")]
        heard = [(at, kind) for at, kind in kinds if at is not None]
        return self.latest(max(heard)[1]) if heard else None

    def watch_xy(self, callback: Callable[[float, float, int, str], None], topic: str = "xy") -> None:
        """Call ``callback(x, y, stamp_ns, frame_id)`` for each geometry_msgs/PointStamped on ``topic``.

        The classifier publishes a regression model's smoothed target there, stamped with the source image's header.
        """
        from geometry_msgs.msg import PointStamped

        from dli_perception.nodes.qos import EVENTS

        def on_point(msg: Any) -> None:
            callback(msg.point.x, msg.point.y, stamp_ns_of(msg.header), msg.header.frame_id)

        self._frame_subs.append(self.node.create_subscription(PointStamped, topic, on_point, EVENTS))
