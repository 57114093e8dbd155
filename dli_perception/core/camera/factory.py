"""The camera node's settings (:class:`SourceConfig`) and :func:`open_source`, which builds the source they describe."""

from __future__ import annotations

from dataclasses import dataclass, field

from dli_perception.core.camera.capture import GStreamerSource, V4L2Source, VideoFileSource, _v4l2_path, csi_pipeline
from dli_perception.core.camera.folder import IMAGE_EXTENSIONS, ImageFolderSource
from dli_perception.core.camera.reconnect import ReconnectingSource
from dli_perception.core.camera.source import FrameSource, FrameTransform
from dli_perception.core.camera.synthetic import SyntheticSource
from dli_perception.core.synthetic import DEFAULT_CLASSES, SyntheticScenes
from dli_perception.errors import ConfigError

SOURCE_KINDS: tuple[str, ...] = ("synthetic", "v4l2", "gstreamer", "csi", "video", "folder")
LIVE_KINDS: tuple[str, ...] = ("v4l2", "gstreamer", "csi")


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
            SyntheticScenes(self.classes or DEFAULT_CLASSES, 16, 16, seed=self.seed, scene_period=self.scene_period)
        if self.fourcc and len(self.fourcc) != 4:
            raise ConfigError(f"fourcc must be 4 characters like MJPG or YUYV (or empty), got {self.fourcc!r}")
        if not 0 <= self.flip_method <= 7:
            raise ConfigError(f"flip_method must be 0..7 (nvvidconv flip-method), got {self.flip_method}")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ConfigError(
                f"need 0 < backoff_initial <= backoff_max seconds, got {self.backoff_initial}, {self.backoff_max}"
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
        return V4L2Source(config.device, config.width, config.height, config.fps, config.fourcc or None, transform)
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
        return ReconnectingSource(lambda: _build(config), config.backoff_initial, config.backoff_max, name=source.name)
    return source
