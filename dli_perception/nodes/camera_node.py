"""camera_node: publishes ``image_raw`` and ``camera_info`` from a camera, a file, a folder or synthetic scenes.

A capture thread reads the source at the requested rate and publishes each
frame stamped with its capture time; the executor only serves parameters and
diagnostics, so a slow device never blocks anything else. A camera that
disappears is reopened with exponential backoff and reported on
``/diagnostics``; the node keeps running.
"""

from __future__ import annotations

import threading
from typing import Any

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from dli_perception.core.camera import FrameTransform, RateKeeper, ReconnectingSource, SourceConfig, open_source
from dli_perception.core.camera_info import Intrinsics, load_calibration, pinhole_from_fov, scaled
from dli_perception.core.imaging import cv2_to_imgmsg
from dli_perception.nodes import localframes
from dli_perception.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from dli_perception.nodes.params import Param, declare
from dli_perception.nodes.qos import SENSOR_DATA, overridable
from dli_perception.nodes.runtime import node_main

SOURCES = ("synthetic", "v4l2", "gstreamer", "csi", "video", "folder")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


PARAMS = [
    Param("source", "synthetic", "Frame source.", choices=SOURCES, read_only=True),
    Param("device", "0", "V4L2 device: an index ('0') or a path ('/dev/video0').", read_only=True),
    Param("pipeline", "", "GStreamer pipeline ending in appsink (source=gstreamer).", read_only=True),
    Param("sensor_id", 0, "CSI sensor id for nvarguscamerasrc (source=csi).", min=0, max=7, read_only=True),
    Param("path", "", "Video file (source=video) or image folder (source=folder).", read_only=True),
    Param("loop", True, "Restart a video or folder at its end (false: stop publishing).", read_only=True),
    Param(
        "width", 640, "Published image width in pixels (frames are resized to it).", min=16, max=7680, read_only=True
    ),
    Param("height", 480, "Published image height in pixels.", min=16, max=4320, read_only=True),
    Param("fps", 30.0, "Publishing rate in frames per second.", min=0.1, max=240.0),
    Param("encoding", "rgb8", "Encoding of published images.", choices=("rgb8", "bgr8")),
    Param("flip", "none", "Mirror frames.", choices=("none", "horizontal", "vertical", "both")),
    Param("rotate", 0, "Rotate frames clockwise, degrees.", choices=(0, 90, 180, 270), min=0, max=270, step=90),
    Param("frame_id", "camera", "frame_id of published headers (the camera's optical frame)."),
    Param(
        "camera_info_file", "", "camera_calibration YAML; empty: ideal pinhole from horizontal_fov_deg.", read_only=True
    ),
    Param(
        "horizontal_fov_deg", 62.2, "Horizontal field of view, degrees, when no calibration file.", min=1.0, max=179.0
    ),
    Param("synthetic.classes", ["free", "blocked"], "Scene classes the synthetic source draws.", read_only=True),
    Param(
        "synthetic.scene_period_s",
        3.0,
        "Seconds each synthetic scene class is shown.",
        min=0.05,
        max=3600.0,
        read_only=True,
    ),
    Param("synthetic.seed", 0, "Seed of the synthetic scenes.", min=0, max=2**31 - 1, read_only=True),
    Param(
        "reconnect.initial_s",
        0.5,
        "First wait before reopening a failed camera, seconds.",
        min=0.01,
        max=60.0,
        read_only=True,
    ),
    Param(
        "reconnect.max_s", 10.0, "Longest wait between reopen attempts, seconds.", min=0.1, max=600.0, read_only=True
    ),
]


class CameraNode(Node):
    """Publishes frames of the configured source on ``image_raw`` (sensor-data QoS) and ``camera_info``."""

    MOVES_FRAMES = True  # run_nodes keeps frame-sized buffers in the heap

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("camera_node", **kwargs)
        p = declare(self, PARAMS, on_change=self._on_params)
        self._fps = p["fps"]
        self._encoding = p["encoding"]
        self._frame_id = p["frame_id"]
        self._transform = FrameTransform(flip=p["flip"], rotate=p["rotate"], width=p["width"], height=p["height"])
        self._fov = p["horizontal_fov_deg"]
        self._calibration: Intrinsics | None = (
            load_calibration(p["camera_info_file"]) if p["camera_info_file"] else None
        )
        self._source_config = SourceConfig(
            kind=p["source"],
            device=p["device"],
            pipeline=p["pipeline"],
            sensor_id=p["sensor_id"],
            path=p["path"],
            loop=p["loop"],
            width=p["width"],
            height=p["height"],
            fps=p["fps"],
            classes=tuple(p["synthetic.classes"]),
            scene_period=p["synthetic.scene_period_s"],
            seed=p["synthetic.seed"],
            reconnect=False,
        )
        # Every kind is wrapped, not only live cameras: a missing file or unplugged camera is
        # retried with backoff and reported, never a crash.
        self._source = ReconnectingSource(
            lambda: open_source(self._source_config),
            backoff_initial=p["reconnect.initial_s"],
            backoff_max=p["reconnect.max_s"],
            name=p["source"],
        )
        self._source.open()
        self._rate = RateKeeper(self._fps)
        self._info_cache: tuple[tuple[int, int], Intrinsics] | None = None

        self.image_pub = self.create_publisher(_image_type(), "image_raw", **overridable(self, SENSOR_DATA))
        # In the one-process runner, in-process subscribers get each frame object directly.
        self._local_images = localframes.advertise(self, "image_raw")
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", SENSOR_DATA)
        self.diagnostics = DiagnosticsPublisher(self, self._diagnostics, hardware_id=p["source"])

        self.published = 0  # frames captured and offered
        self.sent = 0  # of them, frames sent on image_raw (someone subscribed)
        self.ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name="camera_capture", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"publishing {p['source']} frames {p['width']}x{p['height']} {self._encoding} at {self._fps:g} Hz "
            f"on {self.image_pub.topic_name}"
        )

    # -- parameters -----------------------------------------------------------------------------
    def _on_params(self, changes: dict[str, Any]) -> None:
        self._fps = changes.get("fps", self._fps)
        self._encoding = changes.get("encoding", self._encoding)
        self._frame_id = changes.get("frame_id", self._frame_id)
        self._fov = changes.get("horizontal_fov_deg", self._fov)
        if "horizontal_fov_deg" in changes:
            self._info_cache = None
        if "flip" in changes or "rotate" in changes:
            t = self._transform
            self._transform = FrameTransform(
                flip=changes.get("flip", t.flip), rotate=changes.get("rotate", t.rotate), width=t.width, height=t.height
            )

    # -- capture --------------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        while not self._stop.is_set():
            if self._rate.period != 1.0 / self._fps:
                self._rate = RateKeeper(self._fps)
            if self._stop.wait(self._rate.time_until_due()):
                break
            frame = self._source.read()
            self._rate.mark(frame is not None)
            if frame is not None:
                self._publish(frame)
            elif self._source.ended:
                self._end_of_stream()
                return
            elif not self._source.connected:
                self._stop.wait(min(self._source.retry_in(), 0.5))

    def _publish(self, frame) -> None:
        # A message is built and sent only for someone: with nobody subscribed, publishing a
        # 1280x720 frame still costs ~2 ms of conversion and serialisation, camera_info ~0.1 ms.
        local = self._local_images
        remote = self.image_pub.get_subscription_count() > 0
        if local is not None or remote:
            image = self._transform.apply(frame.image)
            if self._encoding == "bgr8":
                image = image[:, :, ::-1]
            msg = cv2_to_imgmsg(image, encoding=self._encoding)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(frame.stamp_ns, 1_000_000_000)
            msg.header.frame_id = self._frame_id
            if local is not None:
                local.publish(msg)
            if remote:
                self.image_pub.publish(msg)
                self.sent += 1
        if self.info_pub.get_subscription_count() > 0:
            self.info_pub.publish(self._camera_info(frame))
        self.published += 1

    def _end_of_stream(self) -> None:
        self.ended = True
        self.get_logger().info(f"end of {self._source_config.kind} stream after {self.published} frames; not looping")

    def _camera_info(self, frame) -> CameraInfo:
        t = self._transform
        height, width = frame.image.shape[:2]
        if t.width is not None:
            width, height = t.width, t.height
        elif t.rotate in (90, 270):
            width, height = height, width
        header = Header(frame_id=self._frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(frame.stamp_ns, 1_000_000_000)
        if self._info_cache is None or self._info_cache[0] != (width, height):
            base = self._calibration or pinhole_from_fov(width, height, self._fov)
            self._info_cache = ((width, height), scaled(base, width, height))
        intr = self._info_cache[1]
        return CameraInfo(
            header=header,
            width=width,
            height=height,
            distortion_model=intr.distortion_model,
            d=intr.d,
            k=intr.k,
            r=intr.r,
            p=intr.p,
        )

    # -- health ---------------------------------------------------------------------------------
    def _diagnostics(self):
        src = self._source
        values = {
            "fps_target": self._fps,
            "fps_measured": self._rate.measured_fps,
            "frames_published": self.published,
            "frames_sent": self.sent,
            "frames_late": self._rate.late,
            "frames_missing": self._rate.dropped,
            "reconnects": src.reconnects,
            "failures": src.failures,
            "last_error": src.last_error or "",
        }
        if self.ended:
            return OK, "end of stream", values
        if not src.connected:
            return ERROR, f"camera unavailable: {src.last_error}", values
        if self._rate.measured_fps < 0.8 * self._fps:
            return WARN, "publishing below the requested rate", values
        return OK, "publishing", values

    def destroy_node(self) -> None:
        """Stop the capture thread (bounded), release the camera, then destroy ROS handles."""
        if hasattr(self, "_thread"):  # absent when the constructor failed part-way
            self._stop.set()
            self._thread.join(timeout=2.0)
        localframes.withdraw(getattr(self, "_local_images", None))
        if hasattr(self, "_source"):
            self._source.close()
            self.get_logger().info(f"camera released after {getattr(self, 'published', 0)} frames")
        super().destroy_node()


def _image_type():
    from sensor_msgs.msg import Image

    return Image


main = node_main(CameraNode)

if __name__ == "__main__":
    import sys

    sys.exit(main())
