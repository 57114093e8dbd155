"""The test-side client of a recorder_node: what a person teaching the robot does.

It publishes frames and labels as they are (invalid labels and raw frames included), calls the
recorder's services and returns their raw responses, and keeps every counts message and every
diagnostics status of its recorder, so tests can assert over the whole history.
"""

from __future__ import annotations

import json

from diagnostic_msgs.msg import DiagnosticArray
from graphutil import DEADLINE_S, DISCOVERY_S, wait_for
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA


class Teacher(Node):
    """Publish frames and labels to the recorder in ``ns``, call its services, record its counts and diagnostics."""

    def __init__(self, context, ns: str = "") -> None:
        super().__init__("teacher", context=context, namespace=ns or "/")
        prefix = "recorder_node"
        self.image_pub = self.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.label_pub = self.create_publisher(String, "teach_label", EVENTS)
        self.capture_client = self.create_client(Trigger, f"{prefix}/capture")
        self.recording_client = self.create_client(SetBool, f"{prefix}/set_recording")
        self.undo_client = self.create_client(Trigger, f"{prefix}/undo")
        self.counts: list[dict] = []
        """Every counts message, oldest first."""
        self.diags: list[dict] = []
        """Every diagnostics status of the recorder, oldest first, as {message, level, key: value}."""
        self._diag_name = f"{ns.strip('/')}/recorder_node".lstrip("/")
        self.create_subscription(String, f"{prefix}/counts", lambda m: self.counts.append(json.loads(m.data)), LATCHED)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, EVENTS)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self._diag_name:
                self.diags.append(
                    {
                        "message": status.message,
                        "level": status.level,
                        **{kv.key: kv.value for kv in status.values},
                    }
                )

    def _call(self, client, request):
        assert client.wait_for_service(timeout_sec=DISCOVERY_S), f"{client.srv_name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, DEADLINE_S + 10), f"{client.srv_name} did not answer"
        return future.result()

    def capture(self) -> Trigger.Response:
        return self._call(self.capture_client, Trigger.Request())

    def undo(self) -> Trigger.Response:
        return self._call(self.undo_client, Trigger.Request())

    def set_recording(self, on: bool) -> SetBool.Response:
        return self._call(self.recording_client, SetBool.Request(data=on))

    def diag(self, key: str, default: str = "") -> str:
        """``key`` of the newest diagnostics status (``message`` and ``level`` included)."""
        return self.diags[-1].get(key, default) if self.diags else default

    def teach(self, label: str) -> None:
        """Publish ``label`` until the recorder reports it as its current label (diagnostics go out on every change)."""
        want = "" if label.strip().casefold() in ("", "none", "unknown") else label.strip()

        def step() -> bool:
            self.label_pub.publish(String(data=label))
            return bool(self.diags) and self.diag("label") == want

        assert wait_for(step, DISCOVERY_S, interval=0.05), f"recorder never reported label {want!r}: {self.diags[-1:]}"
