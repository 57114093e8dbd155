"""Keeping a live camera alive: :class:`ReconnectingSource` retries a failed device with backoff."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from dli_perception.core.camera.source import Frame, FrameSource
from dli_perception.errors import CameraError, ConfigError

_LOG = logging.getLogger(__name__)


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
