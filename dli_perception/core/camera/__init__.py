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

One module per piece: ``source`` (Frame, FrameTransform, the FrameSource interface),
``synthetic``, ``capture`` (V4L2, GStreamer/CSI, video files), ``folder``, ``reconnect``,
``pacing`` (RateKeeper) and ``factory`` (SourceConfig, open_source). Import from here.
"""

from dli_perception.core.camera.capture import (
    GStreamerSource,
    V4L2Source,
    VideoFileSource,
    csi_pipeline,
    gstreamer_available,
)
from dli_perception.core.camera.factory import LIVE_KINDS, SOURCE_KINDS, SourceConfig, open_source
from dli_perception.core.camera.folder import IMAGE_EXTENSIONS, ImageFolderSource
from dli_perception.core.camera.pacing import RateKeeper
from dli_perception.core.camera.reconnect import ReconnectingSource
from dli_perception.core.camera.source import FLIPS, ROTATIONS, Frame, FrameSource, FrameTransform
from dli_perception.core.camera.synthetic import SyntheticSource

__all__ = [
    "FLIPS",
    "IMAGE_EXTENSIONS",
    "LIVE_KINDS",
    "ROTATIONS",
    "SOURCE_KINDS",
    "Frame",
    "FrameSource",
    "FrameTransform",
    "GStreamerSource",
    "ImageFolderSource",
    "RateKeeper",
    "ReconnectingSource",
    "SourceConfig",
    "SyntheticSource",
    "V4L2Source",
    "VideoFileSource",
    "csi_pipeline",
    "gstreamer_available",
    "open_source",
]
