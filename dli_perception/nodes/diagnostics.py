"""Publishing a node's health on ``/diagnostics`` (diagnostic_msgs/DiagnosticArray).

Each node keeps plain counters; a timer turns a snapshot of them into one
DiagnosticStatus per node once a period, so tools such as rqt_robot_monitor
and the diagnostic aggregator show fps, latency, drops and errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from dli_perception.nodes.qos import EVENTS

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class DiagnosticsPublisher:
    """Calls ``snapshot() -> (level, message, {key: value})`` every ``period_s`` and publishes it."""

    def __init__(
        self,
        node: Node,
        snapshot: Callable[[], tuple[int, str, dict[str, Any]]],
        period_s: float = 1.0,
        hardware_id: str = "",
    ) -> None:
        self._node = node
        self._snapshot = snapshot
        self._hardware_id = hardware_id
        self._name = f"{node.get_namespace().rstrip('/')}/{node.get_name()}".lstrip("/")
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", EVENTS)
        self.timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        level, message, values = self._snapshot()
        status = DiagnosticStatus(
            level=level if isinstance(level, bytes) else bytes([level]),
            name=self._name,
            message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self.publisher.publish(array)

    def destroy(self) -> None:
        self._node.destroy_timer(self.timer)
        self._node.destroy_publisher(self.publisher)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
