"""From per-frame class probabilities to a steady label: smoothing, confidence threshold, hysteresis.

A classifier's top class flickers when two classes are close or a frame is
noisy. :class:`DecisionFilter` turns the stream of softmax outputs into the
label the robot acts on:

* smoothing over frames: an exponential moving average (``ema``), a vote of the
  last ``n`` frames where a label needs ``k`` of them (``k_of_n``), or ``none``;
* a confidence ``threshold``: below it the label is ``unknown_label``;
* ``hysteresis`` (EMA/none): a new class must beat the current one by this
  margin, and the current class is kept until its score falls below
  ``threshold - hysteresis`` — a Schmitt trigger, so a label near a boundary
  does not toggle every frame.

Pure numpy; one filter per stream, not thread-safe.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dli_perception.errors import ConfigError

SMOOTHING = ("ema", "k_of_n", "none")
UNKNOWN_INDEX = -1


@dataclass(frozen=True)
class DecisionConfig:
    """How probabilities become a label.

    ``ema_alpha`` in (0, 1] is the weight of the newest frame (1 = no smoothing);
    ``k`` of the last ``n`` frames must agree for ``k_of_n``; ``threshold`` and
    ``hysteresis`` are probabilities in [0, 1].
    """

    smoothing: str = "ema"
    ema_alpha: float = 0.5
    k: int = 3
    n: int = 5
    threshold: float = 0.5
    hysteresis: float = 0.1
    unknown_label: str = "unknown"

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING:
            raise ConfigError(f"smoothing must be one of {SMOOTHING}, got {self.smoothing!r}")
        if not (isinstance(self.ema_alpha, (int, float)) and 0.0 < self.ema_alpha <= 1.0):
            raise ConfigError(f"ema_alpha must be in (0, 1], got {self.ema_alpha!r}")
        if not (isinstance(self.n, int) and isinstance(self.k, int) and 1 <= self.k <= self.n <= 1000):
            raise ConfigError(f"k_of_n needs integers 1 <= k <= n <= 1000, got k={self.k!r}, n={self.n!r}")
        for name in ("threshold", "hysteresis"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not isinstance(self.unknown_label, str) or not self.unknown_label:
            raise ConfigError("unknown_label must be a non-empty string")


@dataclass(frozen=True)
class Decision:
    """The filtered result of one frame.

    ``label`` is a class name or the unknown label, ``score`` its smoothed
    probability (for unknown: the best smoothed class probability); ``raw_*`` are
    this frame's unfiltered top class; ``changed`` says ``label`` differs from the
    previous decision (True for the first); ``index`` is -1 for unknown; ``probs``
    are the smoothed probabilities.
    """

    label: str
    score: float
    raw_label: str
    raw_score: float
    changed: bool
    index: int
    probs: np.ndarray


class DecisionFilter:
    """Stateful filter: feed it each frame's probabilities with :meth:`update`."""

    def __init__(self, classes: Sequence[str], config: DecisionConfig | None = None) -> None:
        self.classes = list(classes)
        self.config = config or DecisionConfig()
        if not self.classes:
            raise ConfigError("DecisionFilter needs at least one class name")
        if self.config.unknown_label in self.classes:
            raise ConfigError(
                f"a class is named {self.config.unknown_label!r}, the same as unknown_label; "
                "set a different unknown_label"
            )
        self._window: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=self.config.n)
        self.reset()

    def reset(self) -> None:
        """Forget all history (e.g. after a model swap or a long pause)."""
        self._ema: np.ndarray | None = None
        self._window.clear()
        self._index: int | None = None

    @property
    def label(self) -> str | None:
        """The current label, or ``None`` before the first update."""
        if self._index is None:
            return None
        return self._name(self._index)

    def _name(self, index: int) -> str:
        return self.config.unknown_label if index == UNKNOWN_INDEX else self.classes[index]

    def _check(self, probs: np.ndarray) -> np.ndarray:
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != (len(self.classes),):
            raise ConfigError(f"expected {len(self.classes)} class probabilities, got shape {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ConfigError("probabilities contain NaN or inf")
        total = float(p.sum())
        if p.min() < -1e-6 or not math.isclose(total, 1.0, abs_tol=1e-3):
            raise ConfigError(
                f"expected probabilities (softmax output, >= 0, summing to 1), got values summing to {total:.4g}"
            )
        return np.clip(p, 0.0, 1.0)

    def update(self, probs: np.ndarray) -> Decision:
        """Take one frame's ``(C,)`` probabilities; returns the decision. :class:`ConfigError` on bad input."""
        cfg = self.config
        p = self._check(probs)
        raw = int(np.argmax(p))
        raw_score = float(p[raw])
        if cfg.smoothing == "k_of_n":
            smoothed, new = self._vote(p, raw, raw_score)
        else:
            if cfg.smoothing == "ema" and self._ema is not None:
                smoothed = cfg.ema_alpha * p + (1.0 - cfg.ema_alpha) * self._ema
            else:
                smoothed = p
            self._ema = smoothed
            new = self._schmitt(smoothed)
        best = int(np.argmax(smoothed))
        previous = self._index
        self._index = new
        score = float(smoothed[new] if new != UNKNOWN_INDEX else smoothed[best])
        return Decision(
            label=self._name(new),
            score=score,
            raw_label=self.classes[raw],
            raw_score=raw_score,
            changed=previous is None or (previous != new),
            index=new,
            probs=smoothed.astype(np.float32),
        )

    def _schmitt(self, s: np.ndarray) -> int:
        """Threshold with hysteresis on smoothed probabilities ``s``."""
        cfg = self.config
        best = int(np.argmax(s))
        cur = self._index
        if cur is None or cur == UNKNOWN_INDEX:
            return best if s[best] >= cfg.threshold else UNKNOWN_INDEX
        if best != cur and s[best] >= cfg.threshold and s[best] >= s[cur] + cfg.hysteresis:
            return best
        if s[cur] < cfg.threshold - cfg.hysteresis:
            return UNKNOWN_INDEX
        return cur

    def _vote(self, p: np.ndarray, raw: int, raw_score: float) -> tuple[np.ndarray, int]:
        """k-of-n vote: a frame votes for its top class (unknown below threshold); a label needs k votes."""
        cfg = self.config
        vote = raw if raw_score >= cfg.threshold else UNKNOWN_INDEX
        self._window.append((vote, p))
        smoothed = np.mean([q for _, q in self._window], axis=0)
        counts = collections.Counter(v for v, _ in self._window)
        winners = [v for v, c in counts.items() if c >= cfg.k]
        current = UNKNOWN_INDEX if self._index is None else self._index
        if not winners:
            return smoothed, current
        top = max(counts[v] for v in winners)
        tied = [v for v in winners if counts[v] == top]
        if current in tied:
            return smoothed, current
        return smoothed, max(tied, key=lambda v: smoothed[v] if v != UNKNOWN_INDEX else -1.0)
