"""The live view's frames: the newest camera (or overlay) image as JPEG, never a queue.

The graph client's subscriptions store only the newest message of ``image_raw`` and of the
classifier's ``~/overlay``; one encoder thread turns the newest into JPEG, at most ``max_fps``
times a second and only while a page watches. The overlay is shown while it keeps coming (a model
is running), else the raw camera. Each :class:`Frame` carries the source image's stamp, so the page
can tell how old the picture it draws is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dli_perception.core.contracts import stamp_ns_of

OVERLAY_FRESH_S = 1.0
"""The overlay is shown while its newest frame is younger than this (seconds); else the raw camera."""
JPEG_QUALITY = 75
THUMB_WIDTH = 96


@dataclass(frozen=True)
class Frame:
    """One encoded frame: sequence number, source stamp (ns since the epoch), source topic kind, JPEG bytes."""

    seq: int
    stamp_ns: int
    source: str  # "camera" or "overlay"
    jpeg: bytes
    width: int
    height: int
    encoded_ns: int


def encode_jpeg(msg: Any, width: int | None = None, quality: int = JPEG_QUALITY) -> tuple[bytes, int, int]:
    """JPEG bytes (and size) of an Image message, resized to ``width`` when given. Raises ImageConversionError."""
    import cv2

    from dli_perception.core.imaging import to_rgb8

    rgb = to_rgb8(msg)
    if width is not None and rgb.shape[1] != width:
        height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        from dli_perception.errors import ImageConversionError

        raise ImageConversionError("JPEG encoding failed")
    return buf.tobytes(), rgb.shape[1], rgb.shape[0]


class FrameEncoder:
    """Keeps the newest raw and overlay messages; encodes the one to show on a thread of its own.

    ``on_frame(frame)`` is called from the encoder thread with every new :class:`Frame`.
    ``watchers`` (set by the server) says how many pages watch; nothing is encoded while it is 0.
    """

    def __init__(self, on_frame: Callable[[Frame], None], max_fps: float = 20.0) -> None:
        self.on_frame = on_frame
        self.max_fps = max_fps
        self.watchers = 0
        self.encoded = 0
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._raw: tuple[Any, float] | None = None
        self._overlay: tuple[Any, float] | None = None
        self._last_sent: Any = None
        self._seq = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="teach_frames", daemon=True)
        self._thread.start()

    # called on the graph client's executor threads: store and wake, nothing else
    def on_raw(self, msg: Any) -> None:
        with self._lock:
            self._raw = (msg, time.monotonic())
            self._wake.notify()

    def on_overlay(self, msg: Any) -> None:
        with self._lock:
            self._overlay = (msg, time.monotonic())
            self._wake.notify()

    def newest_raw(self) -> Any:
        """The newest camera message, or None before the first one."""
        with self._lock:
            return None if self._raw is None else self._raw[0]

    def raw_age_s(self) -> float | None:
        with self._lock:
            return None if self._raw is None else time.monotonic() - self._raw[1]

    def wake(self) -> None:
        with self._lock:
            self._wake.notify()

    def _pick(self) -> tuple[Any, str] | None:
        now = time.monotonic()
        if self._overlay is not None and now - self._overlay[1] < OVERLAY_FRESH_S:
            return self._overlay[0], "overlay"
        if self._raw is not None:
            return self._raw[0], "camera"
        return None

    def _run(self) -> None:
        next_due = 0.0
        while True:
            with self._lock:
                while not self._stop:
                    picked = self._pick() if self.watchers > 0 else None
                    if picked is not None and picked[0] is not self._last_sent:
                        break
                    self._wake.wait(timeout=0.5)
                if self._stop:
                    return
                msg, source = picked
                self._last_sent = msg
            wait = next_due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                with self._lock:  # a newer frame may have come while waiting: send that one
                    picked = self._pick()
                    if picked is not None:
                        msg, source = picked
                        self._last_sent = msg
            next_due = time.monotonic() + 1.0 / self.max_fps
            try:
                jpeg, width, height = encode_jpeg(msg)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the live view
                self.errors += 1
                self.last_error = f"cannot show a frame: {exc}"
                continue
            self._seq += 1
            self.encoded += 1
            self.on_frame(Frame(self._seq, stamp_ns_of(msg.header), source, jpeg, width, height, time.time_ns()))

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=2.0)
