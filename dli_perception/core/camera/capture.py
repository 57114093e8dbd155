"""Sources read through ``cv2.VideoCapture``: V4L2 (USB) cameras, GStreamer pipelines (Jetson CSI), video files.

:func:`csi_pipeline` writes the ``nvarguscamerasrc`` pipeline for a Jetson CSI camera and
:func:`gstreamer_available` tells whether the installed OpenCV can run it. OpenCV is imported
on first use.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core.camera.source import FrameSource, FrameTransform, _cv2, _to_rgb
from dli_perception.errors import CameraError, ConfigError

_LOG = logging.getLogger(__name__)


class _CaptureSource(FrameSource):
    """Shared part of sources reading a ``cv2.VideoCapture``."""

    def __init__(self, name: str, transform: FrameTransform | None) -> None:
        super().__init__(name, transform)
        self._cap: Any = None
        self._cap_fps: float | None = None

    @property
    def fps(self) -> float | None:
        return self._cap_fps

    def _read_bgr(self) -> np.ndarray | None:
        cv2 = _cv2()
        try:
            ok, image = self._cap.read()
        except cv2.error as exc:
            raise CameraError(f"{self._name}: capture failed: {exc}") from exc
        return image if ok and image is not None else None

    def _open_capture(self, source: int | str, api: int | None, cannot_open: str, not_opened: str) -> Any:
        """``cv2.VideoCapture(source, api)`` kept as ``self._cap``; CameraError with ``cannot_open``
        (followed by OpenCV's error) when OpenCV raises, with ``not_opened`` when the capture did not open."""
        cv2 = _cv2()
        try:
            cap = cv2.VideoCapture(source) if api is None else cv2.VideoCapture(source, api)
        except cv2.error as exc:
            raise CameraError(f"{cannot_open}: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            raise CameraError(not_opened)
        self._cap = cap
        return cap

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception as exc:  # noqa: BLE001 - releasing a dead device must not mask the real error
                _LOG.debug("%s: release failed: %s", self._name, exc)

    def _close(self) -> None:
        self._release()

    def _query_fps(self) -> float | None:
        cv2 = _cv2()
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return fps if math.isfinite(fps) and fps > 0 else None


def _v4l2_path(device: int | str) -> tuple[int | str, str]:
    """(what to give cv2.VideoCapture, the /dev path) for an index, "3" or "/dev/video3"."""
    if isinstance(device, bool):
        raise ConfigError(f"device must be an index like 0 or a path like /dev/video0, got {device!r}")
    if isinstance(device, (int, np.integer)):
        if device < 0:
            raise ConfigError(f"device index must be >= 0, got {device}")
        return int(device), f"/dev/video{int(device)}"
    text = str(device).strip()
    if not text:
        raise ConfigError("device is empty: give an index like 0 or a path like /dev/video0")
    if text.isdigit():
        return int(text), f"/dev/video{int(text)}"
    return text, text


class V4L2Source(_CaptureSource):
    """A USB/V4L2 camera through ``cv2.VideoCapture(device, cv2.CAP_V4L2)``.

    ``device``: index (``0``) or path (``/dev/video0``, ``/dev/v4l/by-id/...``).
    ``width``/``height``/``fps`` are requested; the driver may pick the nearest
    mode (logged). ``fourcc`` (e.g. ``"MJPG"``) selects the pixel format, which
    many USB cameras need for 30 Hz at 720p. Raises :class:`CameraError` when
    the device is missing, busy or stops delivering.
    """

    def __init__(
        self,
        device: int | str = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        fourcc: str | None = None,
        transform: FrameTransform | None = None,
    ) -> None:
        self._device, self.path = _v4l2_path(device)
        if width <= 0 or height <= 0 or fps <= 0:
            raise ConfigError(f"width, height and fps must be > 0, got {width}x{height}@{fps}")
        if fourcc and len(fourcc) != 4:
            raise ConfigError(f"fourcc must be 4 characters like MJPG or YUYV, got {fourcc!r}")
        self.width, self.height, self.requested_fps = int(width), int(height), float(fps)
        self.fourcc = fourcc or None
        super().__init__(f"v4l2:{self.path}", transform)

    def _open(self) -> None:
        cv2 = _cv2()
        if not os.path.exists(self.path):
            raise CameraError(
                f"camera device {self.path} does not exist; is the camera plugged in? "
                "List devices with 'v4l2-ctl --list-devices' or 'ls /dev/video*' and set device"
            )
        if not os.access(self.path, os.R_OK | os.W_OK):
            raise CameraError(
                f"no permission to open {self.path}; add your user to the 'video' group "
                "(sudo usermod -aG video $USER, then log in again)"
            )
        cap = self._open_capture(
            self._device,
            cv2.CAP_V4L2,
            f"cannot open {self.path}",
            f"cannot open {self.path} as a V4L2 camera (busy in another program, or not a capture device)",
        )
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._cap_fps = self._query_fps() or self.requested_fps
        if got != (self.width, self.height) or abs(self._cap_fps - self.requested_fps) > 0.5:
            _LOG.warning(
                "%s: asked for %dx%d@%g, the driver gives %dx%d@%g",
                self.path, self.width, self.height, self.requested_fps, got[0], got[1], self._cap_fps,
            )  # fmt: skip

    def _grab(self) -> tuple[np.ndarray, int, str | None]:
        image = self._read_bgr()
        stamp = time.time_ns()
        if image is None:
            raise CameraError(f"{self.path} stopped delivering frames (unplugged or driver error)")
        return _to_rgb(image, _cv2()), stamp, None


def gstreamer_available() -> bool:
    """Whether the installed OpenCV was built with GStreamer (pip's opencv-python-headless is not)."""
    info = _cv2().getBuildInformation()
    match = re.search(r"^\s*GStreamer:\s*(\S+)", info, flags=re.MULTILINE)
    return bool(match) and match.group(1).upper() not in ("NO", "OFF")


def csi_pipeline(
    sensor_id: int = 0,
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    flip_method: int = 0,
    capture_width: int | None = None,
    capture_height: int | None = None,
) -> str:
    """GStreamer pipeline for a Jetson CSI camera (``nvarguscamerasrc``) ending in a BGR appsink.

    The sensor captures at ``capture_width`` x ``capture_height`` (default: the
    output size) and ``nvvidconv`` scales to ``width`` x ``height`` and applies
    ``flip_method`` (0-7, the nvvidconv values: 2 = rotate 180 degrees). The
    appsink keeps only the newest buffer.
    """
    if int(sensor_id) < 0:
        raise ConfigError(f"sensor_id must be >= 0, got {sensor_id}")
    if not 0 <= int(flip_method) <= 7:
        raise ConfigError(f"flip_method must be 0..7 (nvvidconv flip-method; 2 rotates 180), got {flip_method}")
    cw, ch = int(capture_width or width), int(capture_height or height)
    if min(width, height, cw, ch) <= 0 or not fps > 0:
        raise ConfigError(f"width, height and fps must be > 0, got {width}x{height}@{fps}")
    rate = Fraction(float(fps)).limit_denominator(1001)
    return (
        f"nvarguscamerasrc sensor-id={int(sensor_id)} ! "
        f"video/x-raw(memory:NVMM), width={cw}, height={ch}, framerate={rate.numerator}/{rate.denominator}, "
        f"format=NV12 ! nvvidconv flip-method={int(flip_method)} ! "
        f"video/x-raw, width={int(width)}, height={int(height)}, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1"
    )


class GStreamerSource(_CaptureSource):
    """Any GStreamer pipeline ending in ``appsink`` (BGR), through ``cv2.CAP_GSTREAMER``.

    Raises :class:`CameraError` when OpenCV lacks GStreamer or the pipeline does not start.
    """

    def __init__(self, pipeline: str, transform: FrameTransform | None = None, name: str | None = None) -> None:
        pipeline = (pipeline or "").strip()
        if not pipeline:
            raise ConfigError("pipeline is empty; give a GStreamer pipeline ending in 'appsink', or use kind csi")
        if "appsink" not in pipeline:
            raise ConfigError(f"the GStreamer pipeline must end in 'appsink' for OpenCV to read it: {pipeline!r}")
        self.pipeline = pipeline
        super().__init__(name or f"gstreamer:{pipeline.split('!')[0].strip()}", transform)

    def _open(self) -> None:
        cv2 = _cv2()
        if not gstreamer_available():
            raise CameraError(
                "this OpenCV was built without GStreamer (cv2.getBuildInformation() says 'GStreamer: NO'; "
                "pip's opencv-python-headless never has it). Use the system OpenCV with GStreamer "
                "(on a Jetson: apt install python3-opencv from JetPack, and no pip OpenCV shadowing it), "
                "or use kind v4l2 for USB cameras"
            )
        self._open_capture(
            self.pipeline,
            cv2.CAP_GSTREAMER,
            f"cannot start GStreamer pipeline {self.pipeline!r}",
            f"GStreamer pipeline did not start: {self.pipeline!r}. Test it with "
            "'gst-launch-1.0 <pipeline with appsink replaced by fakesink>'; for a CSI camera check "
            "that nvargus-daemon runs (sudo systemctl restart nvargus-daemon) and the sensor id",
        )
        self._cap_fps = self._query_fps()

    def _grab(self) -> tuple[np.ndarray, int, str | None]:
        image = self._read_bgr()
        stamp = time.time_ns()
        if image is None:
            raise CameraError(f"{self._name}: the GStreamer pipeline stopped delivering frames")
        return _to_rgb(image, _cv2()), stamp, None


class VideoFileSource(_CaptureSource):
    """Frames of a video file, stamped with the time they are read.

    At the end: ``loop=True`` starts again (``loops`` counts restarts),
    ``loop=False`` returns ``None``. ``fps`` overrides the file's frame rate as
    the nominal playback rate (the source itself does not sleep). Raises
    :class:`CameraError` for a missing or undecodable file.
    """

    def __init__(
        self, path: str | os.PathLike, loop: bool = True, fps: float | None = None,
        transform: FrameTransform | None = None,
    ) -> None:  # fmt: skip
        if not str(path).strip():
            raise ConfigError("path is empty; give a video file, e.g. path:=/data/drive.mp4")
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps must be > 0 or None (use the file's rate), got {fps}")
        self.path = Path(path).expanduser()
        self.loop = bool(loop)
        self._fps_override = float(fps) if fps else None
        self.loops = 0
        self._pass_frames = 0
        super().__init__(f"video:{self.path}", transform)

    @property
    def fps(self) -> float | None:
        return self._fps_override or self._cap_fps

    def _start(self) -> None:
        self._open_capture(
            str(self.path),
            None,
            f"cannot open video {self.path}",
            f"cannot decode video {self.path}; is it a video file OpenCV/FFmpeg can read?",
        )
        self._pass_frames = 0

    def _open(self) -> None:
        if not self.path.exists():
            raise CameraError(f"video file {self.path} does not exist; check path")
        if not self.path.is_file():
            raise CameraError(f"video path {self.path} is not a file; give a file such as clip.mp4")
        self.loops = 0
        self._start()
        self._cap_fps = self._query_fps()

    def _grab(self) -> tuple[np.ndarray, int, str | None] | None:
        image = self._read_bgr()
        if image is None:
            if self._pass_frames == 0:
                raise CameraError(f"video {self.path} has no decodable frames")
            if not self.loop:
                return None
            self._release()
            self._start()
            self.loops += 1
            image = self._read_bgr()
            if image is None:
                raise CameraError(f"video {self.path} could not be read again from the start")
        self._pass_frames += 1
        return _to_rgb(image, _cv2()), time.time_ns(), None
