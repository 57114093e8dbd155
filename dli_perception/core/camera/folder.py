"""A folder of still images played back as a camera (sorted by file name, optionally looping)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dli_perception.core.camera.source import FrameSource, FrameTransform, _cv2, _to_rgb
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS
from dli_perception.errors import CameraError, ConfigError

_LOG = logging.getLogger(__name__)


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
            raise CameraError(f"image folder path {self.path} is not a folder; use kind video for a video file")
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
