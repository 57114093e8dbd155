"""A teacher for recorder_node tests: publishes frames and labels, calls the recorder's services."""

from __future__ import annotations

import json

from diagnostic_msgs.msg import DiagnosticArray
from graphutil import wait_for
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA

DISCOVERY_S = 20.0
"""Deadline for a peer across processes (discovery took up to ~3 s here)."""
DEADLINE_S = 10.0
"""Deadline for an answer once the peer is known."""


class Teacher(Node):
    """What a person teaching the robot does: publish frames and labels, call the recorder's services."""

    def __init__(self, context, ns: str = "") -> None:
        super().__init__("teacher", context=context, namespace=ns or "/")
        prefix = "recorder_node"
        self.image_pub = self.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.label_pub = self.create_publisher(String, "teach_label", EVENTS)
        self.capture_client = self.create_client(Trigger, f"{prefix}/capture")
        self.recording_client = self.create_client(SetBool, f"{prefix}/set_recording")
        self.undo_client = self.create_client(Trigger, f"{prefix}/undo")
        self.counts: list[dict] = []
        self.diags: list[dict] = []
        self._diag_name = f"{ns.strip('/')}/recorder_node".lstrip("/")
        self.create_subscription(
            String, f"{prefix}/counts", lambda m: self.counts.append(json.loads(m.data)), LATCHED
        )
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
        return self.diags[-1].get(key, default) if self.diags else default

    def teach(self, label: str) -> None:
        """Publish ``label`` until the recorder reports it as its current label."""
        want = "" if label.strip().casefold() in ("", "none", "unknown") else label.strip()

        def step() -> bool:
            self.label_pub.publish(String(data=label))
            return bool(self.diags) and self.diag("label") == want

        assert wait_for(step, DISCOVERY_S, interval=0.05), (
            f"recorder never reported label {want!r}: {self.diags[-1:]}"
        )
