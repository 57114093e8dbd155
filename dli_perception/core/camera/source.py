"""What every camera source is: a :class:`Frame`, the :class:`FrameTransform` and the :class:`FrameSource` interface.

A source implements ``_open``, ``_grab`` and ``_close``; :class:`FrameSource` adds the
open/read/close life cycle, frame indices and the orientation/size fix-up. The OpenCV helpers
here (:func:`_cv2`, :func:`_to_rgb`) are shared by the sources that read through OpenCV.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass

import numpy as np

from dli_perception.errors import CameraError, ConfigError

_LOG = logging.getLogger(__name__)

FLIPS: tuple[str, ...] = ("none", "horizontal", "vertical", "both")
ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)


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
                f"output width and height must both be > 0 (resize) or both 0 (keep size); got {width}x{height}"
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
        frame = Frame(image=np.ascontiguousarray(image), stamp_ns=int(stamp_ns), index=self._index, label=label)
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
