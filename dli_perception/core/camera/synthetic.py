"""The synthetic camera: labelled scenes from :class:`~dli_perception.core.synthetic.SyntheticScenes` as a source.

Tests, demos and the teach station use it where no camera is plugged in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from dli_perception.core.camera.source import FrameSource, FrameTransform
from dli_perception.core.synthetic import SyntheticScenes
from dli_perception.errors import ConfigError


class SyntheticSource(FrameSource):
    """Labelled synthetic frames from :class:`SyntheticScenes`, cycling classes every ``scene_period`` s.

    ``realtime=True``: each frame shows the class scheduled at ``read()`` since
    ``open()`` and is stamped with ``time_ns()`` when rendered (what a live camera
    would do: its frame is stamped when the driver hands it over). ``realtime=False``:
    frame ``i`` is stamped ``start + i / fps`` and shows the class scheduled then,
    independent of how fast it is read.
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
        super().__init__(f"synthetic[{classes}] {self.scenes.width}x{self.scenes.height}@{self._fps:g}", transform)

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
            t = (int(self._time_ns()) - self.start_ns) / 1e9
            label = self.class_at(t)
            image = self.scenes.render(label, index)
            # Stamped once the pixels exist, as the camera sources stamp when their read returns:
            # rendering (7.6 ms for 1280x720) is the fake camera's work, not the transport's.
            return image, int(self._time_ns()), label
        t = index / self._fps
        label = self.class_at(t)
        return self.scenes.render(label, index), self.start_ns + round(index * 1e9 / self._fps), label

    def _close(self) -> None:
        pass
