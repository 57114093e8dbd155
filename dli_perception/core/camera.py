"""Frame sources for the camera node: synthetic scenes, V4L2, GStreamer/CSI, video files, image folders.

Every source is a :class:`FrameSource`: ``open()``, ``read()`` (a :class:`Frame`
with an HxWx3 uint8 **RGB** image, or ``None`` when no frame is available:
the end of a finite stream, or a :class:`ReconnectingSource` waiting to retry),
``close()``, and ``with source:``. A device that fails raises
:class:`~dli_perception.errors.CameraError`; wrap live cameras in
:class:`ReconnectingSource` to turn failures into counted, backed-off retries.

:func:`open_source` builds a source from a :class:`SourceConfig` (the camera
node's parameters). :class:`RateKeeper` paces a capture loop and counts late
and dropped frames. Nothing here imports rclpy; OpenCV is imported on first use.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core.synthetic import DEFAULT_CLASSES, SyntheticScenes
from dli_perception.errors import CameraError, ConfigError

_LOG = logging.getLogger(__name__)

SOURCE_KINDS: tuple[str, ...] = ("synthetic", "v4l2", "gstreamer", "csi", "video", "folder")
LIVE_KINDS: tuple[str, ...] = ("v4l2", "gstreamer", "csi")
FLIPS: tuple[str, ...] = ("none", "horizontal", "vertical", "both")
ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")


def _cv2():
    try:
        import cv2  # deferred: importing cv2 costs ~100 ms and nodes import this module at start
    except ImportError as exc:  # pragma: no cover - cv2 is a dependency
        raise CameraError(
            "OpenCV is not installed: pip install opencv-python-headless (off-robot) "
            "or apt install python3-opencv (Jetson)"
        ) from exc
    return cv2


def _to_rgb(image: np.ndarray, cv2) -> np.ndarray:
    """OpenCV capture output (BGR, BGRA or grey, uint8) -> HxWx3 uint8 RGB."""
    if image.dtype != np.uint8:
        raise CameraError(f"camera delivered {image.dtype} pixels; only 8-bit frames are supported")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise CameraError(f"camera delivered a frame of unsupported shape {image.shape}")


# --------------------------------------------------------------------------- frames and transforms


@dataclass
class Frame:
    """One captured frame.

    ``image``: HxWx3 uint8 RGB, C-contiguous. ``stamp_ns``: capture time in
    nanoseconds since the epoch (``time.time_ns()`` at capture, or the synthetic
    schedule time). ``index``: 0, 1, 2... per opened source. ``label``: the class
    shown (synthetic sources only), else ``None``.
    """

    image: np.ndarray
    stamp_ns: int
    index: int
    label: str | None = None


@dataclass(frozen=True)
class FrameTransform:
    """Orientation and size fix-up applied to every captured frame.

    Order: ``flip`` (``none``/``horizontal``/``vertical``/``both``), then
    ``rotate`` clockwise by 0/90/180/270 degrees, then resize to
    ``width`` x ``height`` when both are set (0 or ``None`` keeps the size).
    """

    flip: str = "none"
    rotate: int = 0
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.flip not in FLIPS:
            raise ConfigError(f"flip must be one of {', '.join(FLIPS)}; got {self.flip!r}")
        try:
            rotate = int(self.rotate)
        except (TypeError, ValueError):
            rotate = -1
        if rotate not in ROTATIONS or float(self.rotate) != rotate:
            raise ConfigError(f"rotate must be one of {ROTATIONS} (degrees clockwise); got {self.rotate!r}")
        object.__setattr__(self, "rotate", rotate)
        width, height = int(self.width or 0), int(self.height or 0)
        if width < 0 or height < 0 or (width == 0) != (height == 0):
            raise ConfigError(
                "output width and height must both be > 0 (resize) or both 0 (keep size); "
                f"got {width}x{height}"
            )
        object.__setattr__(self, "width", width or None)
        object.__setattr__(self, "height", height or None)

    @property
    def is_identity(self) -> bool:
        return self.flip == "none" and self.rotate == 0 and self.width is None

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Transform one HxWx3 image; returns ``image`` itself when there is nothing to do."""
        if self.is_identity:
            return image
        cv2 = _cv2()
        if self.flip != "none":
            image = cv2.flip(image, {"horizontal": 1, "vertical": 0, "both": -1}[self.flip])
        if self.rotate:
            code = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
            image = cv2.rotate(image, code[self.rotate])
        if self.width is not None and (image.shape[1], image.shape[0]) != (self.width, self.height):
            shrink = self.width * self.height < image.shape[0] * image.shape[1]
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            image = cv2.resize(image, (self.width, self.height), interpolation=interp)
        return image


# --------------------------------------------------------------------------- the interface


class FrameSource(abc.ABC):
    """A camera-like stream of RGB frames. Subclasses implement ``_open``, ``_grab`` and ``_close``.

    ``read()`` returns ``None`` once a finite stream has ended (then ``ended`` is
    True) and raises :class:`CameraError` when the device fails.
    """

    def __init__(self, name: str, transform: FrameTransform | None = None) -> None:
        self._name = name
        self._transform = None if transform is None or transform.is_identity else transform
        self._is_open = False
        self._ended = False
        self._index = 0

    @property
    def name(self) -> str:
        """Human-readable description for logs and diagnostics."""
        return self._name

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def ended(self) -> bool:
        """True once a finite source (video or folder without loop, capped synthetic) is exhausted."""
        return self._ended

    @property
    def frames_read(self) -> int:
        """Frames delivered since the last ``open()``."""
        return self._index

    @property
    def fps(self) -> float | None:
        """Nominal frame rate in Hz, or ``None`` when the source runs as fast as it is read."""
        return None

    def open(self) -> None:
        """Acquire the device or file; no-op when already open. Raises :class:`CameraError`."""
        if self._is_open:
            return
        self._ended = False
        self._index = 0
        self._open()
        self._is_open = True
        _LOG.info("opened camera source %s", self._name)

    def read(self) -> Frame | None:
        """Next frame, or ``None`` at the end of the stream. Raises :class:`CameraError` on failure."""
        if not self._is_open:
            raise CameraError(f"{self._name}: read() before open(); call open() first or use 'with source:'")
        if self._ended:
            return None
        got = self._grab()
        if got is None:
            self._ended = True
            _LOG.info("camera source %s ended after %d frames", self._name, self._index)
            return None
        image, stamp_ns, label = got
        if self._transform is not None:
            image = self._transform.apply(image)
        frame = Frame(
            image=np.ascontiguousarray(image), stamp_ns=int(stamp_ns), index=self._index, label=label
        )
        self._index += 1
        return frame

    def close(self) -> None:
        """Release the device or file; safe to call twice."""
        if not self._is_open:
            return
        self._is_open = False
        try:
            self._close()
        finally:
            _LOG.info("closed camera source %s", self._name)

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, open={self._is_open})"

    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _grab(self) -> tuple[np.ndarray, int, str | None] | None:
        """(RGB image, stamp_ns, label) for the next frame, or None at the end of the stream."""

    @abc.abstractmethod
    def _close(self) -> None: ...


# --------------------------------------------------------------------------- synthetic


class SyntheticSource(FrameSource):
    """Labelled synthetic frames from :class:`SyntheticScenes`, cycling classes every ``scene_period`` s.

    ``realtime=True``: each frame is stamped with ``time_ns()`` at ``read()`` and
    shows the class scheduled at that time since ``open()`` (what a live camera
    would do). ``realtime=False``: frame ``i`` is stamped ``start + i / fps``
    and shows the class scheduled then, independent of how fast it is read.
    Frame ``i`` always renders ``scenes.render(label, i)``; ``max_frames``
    (``None``: endless) ends the stream.
    """

    def __init__(
        self,
        scenes: SyntheticScenes | None = None,
        fps: float = 30.0,
        scene_period: float | None = None,
        realtime: bool = True,
        max_frames: int | None = None,
        transform: FrameTransform | None = None,
        time_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.scenes = scenes if scenes is not None else SyntheticScenes()
        if not fps > 0:
            raise ConfigError(f"fps must be > 0, got {fps}")
        self.scene_period = self.scenes.scene_period if scene_period is None else float(scene_period)
        if not self.scene_period > 0:
            raise ConfigError(f"scene_period must be > 0 seconds, got {scene_period}")
        if max_frames is not None and max_frames < 0:
            raise ConfigError(f"max_frames must be >= 0 or None, got {max_frames}")
        self._fps = float(fps)
        self.realtime = bool(realtime)
        self.max_frames = max_frames
        self._time_ns = time_ns
        self.start_ns = 0
        classes = ",".join(self.scenes.classes)
        super().__init__(
            f"synthetic[{classes}] {self.scenes.width}x{self.scenes.height}@{self._fps:g}", transform
        )

    @property
    def fps(self) -> float:
        return self._fps

    def class_at(self, t_seconds: float) -> str:
        """Class shown ``t_seconds`` after ``open()``."""
        return self.scenes.class_at(t_seconds, self.scene_period)

    def _open(self) -> None:
        self.start_ns = int(self._time_ns())

    def _grab(self) -> tuple[np.ndarray, int, str | None] | None:
        index = self._index
        if self.max_frames is not None and index >= self.max_frames:
            return None
        if self.realtime:
            stamp = int(self._time_ns())
            t = (stamp - self.start_ns) / 1e9
        else:
            t = index / self._fps
            stamp = self.start_ns + round(index * 1e9 / self._fps)
        label = self.class_at(t)
        return self.scenes.render(label, index), stamp, label

    def _close(self) -> None:
        pass


# --------------------------------------------------------------------------- OpenCV-backed sources


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
        try:
            cap = cv2.VideoCapture(self._device, cv2.CAP_V4L2)
        except cv2.error as exc:
            raise CameraError(f"cannot open {self.path}: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot open {self.path} as a V4L2 camera (busy in another program, or not a capture device)"
            )
        self._cap = cap
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
        raise ConfigError(
            f"flip_method must be 0..7 (nvvidconv flip-method; 2 rotates 180), got {flip_method}"
        )
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

    def __init__(
        self, pipeline: str, transform: FrameTransform | None = None, name: str | None = None
    ) -> None:
        pipeline = (pipeline or "").strip()
        if not pipeline:
            raise ConfigError(
                "pipeline is empty; give a GStreamer pipeline ending in 'appsink', or use kind csi"
            )
        if "appsink" not in pipeline:
            raise ConfigError(
                f"the GStreamer pipeline must end in 'appsink' for OpenCV to read it: {pipeline!r}"
            )
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
        try:
            cap = cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)
        except cv2.error as exc:
            raise CameraError(f"cannot start GStreamer pipeline {self.pipeline!r}: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"GStreamer pipeline did not start: {self.pipeline!r}. Test it with "
                "'gst-launch-1.0 <pipeline with appsink replaced by fakesink>'; for a CSI camera check "
                "that nvargus-daemon runs (sudo systemctl restart nvargus-daemon) and the sensor id"
            )
        self._cap = cap
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
        cv2 = _cv2()
        try:
            cap = cv2.VideoCapture(str(self.path))
        except cv2.error as exc:
            raise CameraError(f"cannot open video {self.path}: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot decode video {self.path}; is it a video file OpenCV/FFmpeg can read?")
        self._cap = cap
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


class ImageFolderSource(FrameSource):
    """A slideshow of the images in one folder (not recursive), in sorted file-name order.

    Files whose extension (case-insensitive) is in ``extensions`` are listed at
    ``open()``. Unreadable images are skipped with a warning, dropped from the
    list and counted in ``skipped``. At the end: ``loop`` restarts (``loops``
    counts), else ``None``. Raises :class:`CameraError` for a missing folder,
    one with no images, or one whose images are all unreadable.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        loop: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        fps: float | None = None,
        transform: FrameTransform | None = None,
    ) -> None:
        if not str(path).strip():
            raise ConfigError("path is empty; give a folder of images, e.g. path:=/data/images")
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps must be > 0 or None, got {fps}")
        self.path = Path(path).expanduser()
        self.loop = bool(loop)
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        if not self.extensions:
            raise ConfigError("extensions is empty; e.g. ('.jpg', '.png')")
        self._fps = float(fps) if fps else None
        self.files: list[Path] = []
        self.skipped = 0
        self.skipped_files: list[Path] = []
        self.loops = 0
        self.current_file: Path | None = None
        self._pos = 0
        super().__init__(f"folder:{self.path}", transform)

    @property
    def fps(self) -> float | None:
        return self._fps

    def _open(self) -> None:
        if not self.path.exists():
            raise CameraError(f"image folder {self.path} does not exist; check path")
        if not self.path.is_dir():
            raise CameraError(
                f"image folder path {self.path} is not a folder; use kind video for a video file"
            )
        files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in self.extensions and p.is_file())
        if not files:
            raise CameraError(f"no images ({', '.join(self.extensions)}) in folder {self.path}")
        self.files = files
        self.skipped = 0
        self.skipped_files = []
        self.loops = 0
        self._pos = 0

    def _grab(self) -> tuple[np.ndarray, int, str | None] | None:
        cv2 = _cv2()
        while True:
            if self._pos >= len(self.files):
                if not self.loop:
                    return None
                self._pos = 0
                self.loops += 1
            file = self.files[self._pos]
            try:
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            except cv2.error:
                image = None
            if image is None:
                _LOG.warning("skipping unreadable image %s", file)
                self.skipped += 1
                self.skipped_files.append(file)
                del self.files[self._pos]
                if not self.files:
                    raise CameraError(f"every image in {self.path} is unreadable (skipped {self.skipped})")
                continue
            self._pos += 1
            self.current_file = file
            return _to_rgb(image, cv2), time.time_ns(), None

    def _close(self) -> None:
        self.current_file = None


# --------------------------------------------------------------------------- reconnecting wrapper


class ReconnectingSource(FrameSource):
    """Keeps a live source alive: on failure, close it and retry ``factory()`` + ``open()`` with backoff.

    ``read()`` never sleeps and never raises :class:`CameraError`: while the
    device is down it returns ``None`` and retries once the backoff delay has
    passed (``backoff_initial`` doubling up to ``backoff_max`` seconds, reset
    after a frame is delivered). ``failures`` counts failed opens and reads,
    ``reconnects`` counts successful re-opens, ``last_error`` keeps the latest
    message. :class:`ConfigError` from the factory is a configuration bug and
    propagates. Frame indices continue across reconnects.
    """

    def __init__(
        self,
        factory: Callable[[], FrameSource],
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ConfigError(
                f"need 0 < backoff_initial <= backoff_max, got {backoff_initial} and {backoff_max} seconds"
            )
        super().__init__(name or "reconnecting", None)
        self._factory = factory
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self._clock = clock
        self._inner: FrameSource | None = None
        self._backoff = self.backoff_initial
        self._next_attempt = 0.0
        self._ever_connected = False
        self.failures = 0
        self.reconnects = 0
        self.attempts = 0
        self.last_error: str | None = None

    @property
    def source(self) -> FrameSource | None:
        """The wrapped source while connected, else ``None``."""
        return self._inner

    @property
    def connected(self) -> bool:
        return self._inner is not None

    @property
    def fps(self) -> float | None:
        return self._inner.fps if self._inner is not None else None

    @property
    def ended(self) -> bool:
        return self._inner is not None and self._inner.ended

    def retry_in(self) -> float:
        """Seconds until the next open attempt (0 when connected or due)."""
        if self._inner is not None or not self._is_open:
            return 0.0
        return max(0.0, self._next_attempt - self._clock())

    def _open(self) -> None:
        self._backoff = self.backoff_initial
        self._next_attempt = self._clock()
        self._try_connect()

    def _fail(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        delay = self._backoff
        self._next_attempt = self._clock() + delay
        self._backoff = min(self._backoff * 2.0, self.backoff_max)
        _LOG.warning("%s: %s; retrying in %.1f s", self._name, message, delay)

    def _drop_inner(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            try:
                inner.close()
            except Exception as exc:  # noqa: BLE001 - a dead device may fail to close; it is gone anyway
                _LOG.debug("%s: close after failure raised %s", self._name, exc)

    def _try_connect(self) -> None:
        self.attempts += 1
        source = self._factory()  # ConfigError propagates: retrying cannot fix a bad configuration
        try:
            source.open()
        except (CameraError, OSError) as exc:
            try:
                source.close()
            except Exception as close_exc:  # noqa: BLE001 - a half-opened device may fail to close
                _LOG.debug("%s: close after failed open raised %s", self._name, close_exc)
            self._fail(str(exc))
            return
        self._inner = source
        if self._ever_connected:
            self.reconnects += 1
            _LOG.info("%s: reconnected to %s (reconnect %d)", self._name, source.name, self.reconnects)
        self._ever_connected = True

    def _grab(self) -> tuple[np.ndarray, int, str | None] | None:
        raise NotImplementedError  # read() is overridden

    def read(self) -> Frame | None:
        """Next frame, or ``None`` while disconnected or at the end of a stream; never raises on failure."""
        if not self._is_open:
            raise CameraError(f"{self._name}: read() before open(); call open() first or use 'with source:'")
        if self._inner is None:
            if self._clock() < self._next_attempt:
                return None
            self._try_connect()
            if self._inner is None:
                return None
        inner = self._inner
        try:
            if not inner.is_open:
                raise CameraError(f"{inner.name} closed unexpectedly")
            frame = inner.read()
        except (CameraError, OSError) as exc:
            self._drop_inner()
            self._fail(str(exc))
            return None
        if frame is None:
            return None
        self._backoff = self.backoff_initial
        frame = dataclasses.replace(frame, index=self._index)
        self._index += 1
        return frame

    def _close(self) -> None:
        self._drop_inner()


# --------------------------------------------------------------------------- pacing


class RateKeeper:
    """Paces a capture loop at ``fps`` and counts frames not delivered in time. Pure; the clock is injected.

    Call :meth:`mark` once per due slot, after trying to capture: ``delivered``
    counts frames, ``dropped`` counts due slots where the source had nothing,
    ``late`` counts slots skipped because the loop fell more than one period
    behind (no burst of catch-up frames follows).
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic, window: int = 30) -> None:
        if not fps > 0:
            raise ConfigError(f"fps must be > 0, got {fps}")
        self.period = 1.0 / float(fps)
        self._clock = clock
        self._window = max(2, int(window))
        self.reset()

    def reset(self) -> None:
        """Forget counters and restart the schedule at the next :meth:`mark`."""
        self._t0: float | None = None
        self._slot = 0
        self.delivered = 0
        self.dropped = 0
        self.late = 0
        self._times: deque[float] = deque(maxlen=self._window)

    @property
    def next_due(self) -> float | None:
        """Clock time the next frame is due, ``None`` before the first :meth:`mark` (due now)."""
        return None if self._t0 is None else self._t0 + self._slot * self.period

    def time_until_due(self) -> float:
        """Seconds until the next frame is due (0 when due or overdue)."""
        due = self.next_due
        return 0.0 if due is None else max(0.0, due - self._clock())

    def due(self) -> bool:
        due = self.next_due
        return due is None or self._clock() >= due

    def mark(self, delivered: bool) -> None:
        """Close the current slot: ``delivered`` says whether a frame was captured for it."""
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
            self._slot = 0
        current = math.floor((now - self._t0) / self.period + 1e-9)
        if current > self._slot:
            self.late += current - self._slot
            self._slot = current
        self._slot += 1
        if delivered:
            self.delivered += 1
            self._times.append(now)
        else:
            self.dropped += 1

    @property
    def measured_fps(self) -> float:
        """Delivered frames per second over the last ``window`` frames (0 until two frames)."""
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


# --------------------------------------------------------------------------- configuration and factory


def _kinds_hint() -> str:
    return (
        "kind:=synthetic | kind:=v4l2 device:=0 | kind:=csi sensor_id:=0 | "
        "kind:=gstreamer pipeline:='... ! appsink' | kind:=video path:=/data/clip.mp4 | "
        "kind:=folder path:=/data/images"
    )


@dataclass(frozen=True)
class SourceConfig:
    """Everything :func:`open_source` needs; field names match the camera node's parameters.

    ``width``/``height``/``fps`` are asked of live and synthetic sources;
    ``fps`` is also the nominal rate of video/folder playback. ``output_width``/
    ``output_height`` (0 = keep), ``flip`` and ``rotate`` apply to every kind.
    ``reconnect`` wraps live kinds (v4l2, gstreamer, csi) in :class:`ReconnectingSource`.
    """

    kind: str = "synthetic"
    device: int | str = 0
    pipeline: str = ""
    path: str = ""
    width: int = 640
    height: int = 480
    fps: float = 30.0
    fourcc: str = ""
    sensor_id: int = 0
    flip_method: int = 0
    loop: bool = True
    classes: tuple[str, ...] = DEFAULT_CLASSES
    scene_period: float = 2.0
    seed: int = 0
    realtime: bool = True
    flip: str = "none"
    rotate: int = 0
    output_width: int = 0
    output_height: int = 0
    reconnect: bool = True
    backoff_initial: float = 0.5
    backoff_max: float = 10.0
    extensions: tuple[str, ...] = field(default=IMAGE_EXTENSIONS)

    def __post_init__(self) -> None:
        kind = str(self.kind).strip().lower()
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"unknown camera kind {self.kind!r}; use one of: {_kinds_hint()}")
        object.__setattr__(self, "kind", kind)
        classes = self.classes
        if isinstance(classes, str):
            classes = tuple(c.strip() for c in classes.split(",") if c.strip())
        object.__setattr__(self, "classes", tuple(classes))
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for key in ("width", "height", "fps", "scene_period"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{key} must be a number > 0, got {value!r}")
        for key in ("output_width", "output_height", "seed", "sensor_id"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key} must be an integer >= 0, got {value!r}")
        if kind in ("video", "folder") and not str(self.path).strip():
            example = "/data/clip.mp4" if kind == "video" else "/data/images"
            raise ConfigError(f"kind {kind} needs a path, e.g. path:={example}")
        if kind == "gstreamer" and not str(self.pipeline).strip():
            raise ConfigError(
                "kind gstreamer needs a pipeline ending in appsink, e.g. "
                "pipeline:='v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink' "
                "(or use kind:=csi for a Jetson CSI camera)"
            )
        if kind == "synthetic":
            SyntheticScenes(
                self.classes or DEFAULT_CLASSES, 16, 16, seed=self.seed, scene_period=self.scene_period
            )
        if self.fourcc and len(self.fourcc) != 4:
            raise ConfigError(
                f"fourcc must be 4 characters like MJPG or YUYV (or empty), got {self.fourcc!r}"
            )
        if not 0 <= self.flip_method <= 7:
            raise ConfigError(f"flip_method must be 0..7 (nvvidconv flip-method), got {self.flip_method}")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ConfigError(
                "need 0 < backoff_initial <= backoff_max seconds, "
                f"got {self.backoff_initial}, {self.backoff_max}"
            )
        self.transform()  # validates flip, rotate and output size
        if kind == "v4l2":
            _v4l2_path(self.device)

    def transform(self) -> FrameTransform:
        """The :class:`FrameTransform` these settings describe."""
        return FrameTransform(self.flip, self.rotate, self.output_width or None, self.output_height or None)


def _build(config: SourceConfig) -> FrameSource:
    transform = config.transform()
    kind = config.kind
    if kind == "synthetic":
        scenes = SyntheticScenes(
            config.classes or DEFAULT_CLASSES, config.width, config.height, config.seed, config.scene_period
        )
        return SyntheticSource(scenes, config.fps, config.scene_period, config.realtime, transform=transform)
    if kind == "v4l2":
        return V4L2Source(
            config.device, config.width, config.height, config.fps, config.fourcc or None, transform
        )
    if kind == "csi":
        pipeline = csi_pipeline(config.sensor_id, config.width, config.height, config.fps, config.flip_method)
        return GStreamerSource(pipeline, transform, name=f"csi:{config.sensor_id}")
    if kind == "gstreamer":
        return GStreamerSource(config.pipeline, transform)
    if kind == "video":
        return VideoFileSource(config.path, config.loop, config.fps, transform)
    return ImageFolderSource(config.path, config.loop, config.extensions, config.fps, transform)


def open_source(config: SourceConfig) -> FrameSource:
    """Build (not yet open) the source ``config`` describes.

    Live kinds come wrapped in :class:`ReconnectingSource` when ``config.reconnect``;
    opening any other source raises :class:`CameraError` for a missing device or file.
    """
    if not isinstance(config, SourceConfig):
        raise ConfigError(f"open_source needs a SourceConfig, got {type(config).__name__}")
    source = _build(config)
    if config.reconnect and config.kind in LIVE_KINDS:
        return ReconnectingSource(
            lambda: _build(config), config.backoff_initial, config.backoff_max, name=source.name
        )
    return source
