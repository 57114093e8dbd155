"""Synthetic camera scenes: labelled frames without hardware.

Each class gets its own look, chosen so that a classifier (even a ResNet-18
with random weights and only its last layer trained) tells classes apart from
a handful of images:

* a background hue band of its own (hues 45 degrees apart, first classes the
  furthest apart), drawn as a brightness gradient;
* a shape type of its own (circle, stripes, triangle, square, cross, ring,
  star, dots) in a brighter, paler hue between two other classes' background hues.

Frames of one class still differ: hue, saturation, brightness, gradient,
shape position, size, rotation and aspect are jittered, grey distractor blobs
are added, and sensor-like noise is laid on top. A frame is a pure function of
``(classes, width, height, seed, class, index)``.

Class names are only labels (``free``/``blocked`` does not draw a floor or an
obstacle); no text is drawn, so nothing in the pixels spells the label.
"""

from __future__ import annotations

import colorsys
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dli_perception.errors import ConfigError

_LOG = logging.getLogger(__name__)

DEFAULT_CLASSES: tuple[str, ...] = ("free", "blocked")
"""JetBot collision avoidance."""

THUMBS_CLASSES: tuple[str, ...] = ("thumbs_up", "thumbs_down")
"""The DLI course's thumbs example."""

SHAPES: tuple[str, ...] = ("circle", "stripes", "triangle", "square", "cross", "ring", "star", "dots")
"""Shape type of class ``i`` is ``SHAPES[i]``."""

MAX_CLASSES = len(SHAPES)

# Background hue (degrees) of class i: eight hues 45 degrees apart, ordered so that the
# first k classes are spread as far apart as possible (green, magenta, azure, orange, ...).
_HUES_DEG: tuple[float, ...] = (120.0, 300.0, 210.0, 30.0, 165.0, 345.0, 255.0, 75.0)

_HUE_JITTER_DEG = 7.0
# Shape hue: opposite the background, then half a step on, so it falls between two background hues
# and a shape never has the colour of another class's background.
_FG_HUE_OFFSET_DEG = 180.0 + 22.5
_NOISE_SIGMA = 6.0
_NOISE_PAD = 4099  # extra noise samples so each frame starts the noise at a random offset


@dataclass(frozen=True)
class SceneStyle:
    """The fixed look of one class: background hue (degrees, 0-360) and shape type."""

    name: str
    index: int
    hue_deg: float
    shape: str


def _rgb(hue_deg: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _cv2():
    import cv2  # deferred: the camera node imports this module at start-up

    return cv2


def _normalise_classes(classes: Sequence[str] | int) -> tuple[str, ...]:
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        count = int(classes)
        if not 1 <= count <= MAX_CLASSES:
            raise ConfigError(f"synthetic scenes support 1 to {MAX_CLASSES} classes, got {count}")
        return tuple(f"class_{i}" for i in range(count))
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    names = tuple(classes)
    if not names:
        raise ConfigError("synthetic scenes need at least one class name, e.g. classes=['free', 'blocked']")
    if len(names) > MAX_CLASSES:
        raise ConfigError(f"synthetic scenes support at most {MAX_CLASSES} classes, got {len(names)}: {names}")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"synthetic class names must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"synthetic class names must be unique, got {names}")
    return names


class SyntheticScenes:
    """Renders labelled synthetic frames (HxWx3 uint8 RGB) for up to :data:`MAX_CLASSES` classes.

    ``classes`` is a sequence of names, a comma-separated string, or a count
    (names ``class_0``...). ``scene_period`` (seconds per class) drives
    :meth:`class_at`, the schedule a synthetic camera follows.
    Raises :class:`ConfigError` for bad classes, sizes or periods.
    """

    def __init__(
        self,
        classes: Sequence[str] | int = DEFAULT_CLASSES,
        width: int = 640,
        height: int = 480,
        seed: int = 0,
        scene_period: float = 2.0,
    ) -> None:
        self.classes = _normalise_classes(classes)
        if not (16 <= int(width) <= 8192 and 16 <= int(height) <= 8192):
            raise ConfigError(f"synthetic frame size must be 16..8192 pixels each way, got {width}x{height}")
        if not float(scene_period) > 0:
            raise ConfigError(f"scene_period must be > 0 seconds, got {scene_period}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.width = int(width)
        self.height = int(height)
        self.seed = int(seed)
        self.scene_period = float(scene_period)
        self.styles = tuple(
            SceneStyle(name=name, index=i, hue_deg=_HUES_DEG[i], shape=SHAPES[i]) for i, name in enumerate(self.classes)
        )
        self._index_of = {name: i for i, name in enumerate(self.classes)}
        # Noise is drawn once; each frame takes a contiguous window at a random offset (no per-frame RNG).
        size = self.height * self.width * 3
        noise = np.random.default_rng([self.seed, 0x5EED]).standard_normal(size + _NOISE_PAD, dtype=np.float32)
        noise *= _NOISE_SIGMA
        np.rint(noise, out=noise)
        np.clip(noise, -255, 255, out=noise)
        self._noise_pos = np.clip(noise, 0, None).astype(np.uint8)
        self._noise_neg = np.clip(-noise, 0, None).astype(np.uint8)
        self._ramp = {n: np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None] for n in {self.height, self.width}}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self, cls: str | int) -> int:
        """Index of a class given by name or index; :class:`ConfigError` if unknown."""
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
            if not 0 <= int(cls) < len(self.classes):
                raise ConfigError(f"class index {cls} out of range 0..{len(self.classes) - 1}")
            return int(cls)
        try:
            return self._index_of[cls]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown synthetic class {cls!r}; known classes: {list(self.classes)}") from None

    def style(self, cls: str | int) -> SceneStyle:
        """The fixed look of a class."""
        return self.styles[self.class_index(cls)]

    def class_at(self, t_seconds: float, scene_period: float | None = None) -> str:
        """Class shown at ``t_seconds`` after the start: classes cycle, ``scene_period`` seconds each."""
        period = self.scene_period if scene_period is None else float(scene_period)
        if not period > 0:
            raise ConfigError(f"scene_period must be > 0 seconds, got {scene_period}")
        slot = math.floor(float(t_seconds) / period + 1e-9)
        return self.classes[slot % len(self.classes)]

    def render(self, cls: str | int, rng_or_index: int | np.random.Generator = 0) -> np.ndarray:
        """Draw one frame of ``cls`` (name or index): ``height x width x 3`` uint8 RGB, C-contiguous.

        An integer ``rng_or_index`` (>= 0) makes the frame a pure function of
        (seed, class, index); a ``numpy.random.Generator`` is consumed instead.
        """
        ci = self.class_index(cls)
        if isinstance(rng_or_index, np.random.Generator):
            rng = rng_or_index
        else:
            index = int(rng_or_index)
            if index < 0:
                raise ConfigError(f"frame index must be >= 0, got {index}")
            rng = np.random.default_rng([self.seed, ci, index])
        cv2 = _cv2()
        style = self.styles[ci]
        h, w = self.height, self.width
        u = rng.uniform(size=16)  # all scalar jitter from one draw, in a fixed order

        hue = style.hue_deg + (u[0] * 2 - 1) * _HUE_JITTER_DEG
        bg_sat = 0.55 + 0.3 * u[1]
        bg_val = 0.5 + 0.35 * u[2]
        fg_hue = hue + _FG_HUE_OFFSET_DEG + (u[3] * 2 - 1) * _HUE_JITTER_DEG
        fg_rgb = _rgb(fg_hue, 0.45 + 0.35 * u[4], 0.88 + 0.12 * u[5])

        image = np.empty((h, w, 3), dtype=np.uint8)
        # Background: the class colour as a linear brightness gradient in one of four directions.
        depth = 0.35 * u[6]
        direction = int(u[7] * 4) % 4
        along = h if direction < 2 else w
        ramp = self._ramp[along]
        if direction % 2:
            ramp = ramp[::-1]
        base = np.asarray(_rgb(hue, bg_sat, bg_val), dtype=np.float32)
        line = ((1.0 - depth) + depth * ramp) * base
        line = np.clip(line + 0.5, 0, 255).astype(np.uint8)
        image[...] = line[:, None, :] if direction < 2 else line[None, :, :]

        # Grey distractors shared by all classes: they vary frames without carrying the label.
        short = min(h, w)
        for _ in range(int(rng.integers(0, 3))):
            g = int(rng.integers(40, 216))
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (
                max(1, int(short * rng.uniform(0.02, 0.07))),
                max(1, int(short * rng.uniform(0.02, 0.07))),
            )
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, (g, g, g), -1, cv2.LINE_AA)

        self._draw_shape(cv2, image, style.shape, fg_rgb, u[8:], rng)

        off = int(rng.integers(0, _NOISE_PAD))
        size = h * w * 3
        cv2.add(image, self._noise_pos[off : off + size].reshape(h, w, 3), dst=image)
        cv2.subtract(image, self._noise_neg[off : off + size].reshape(h, w, 3), dst=image)
        return image

    def _draw_shape(
        self,
        cv2,
        image: np.ndarray,
        shape: str,
        color: tuple[int, int, int],
        u: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        h, w = image.shape[:2]
        short = min(h, w)
        radius = short * (0.18 + 0.14 * u[0])
        cx = radius * 0.6 + (w - 1.2 * radius) * u[1]
        cy = radius * 0.6 + (h - 1.2 * radius) * u[2]
        angle = 2 * math.pi * u[3]
        aspect = 0.75 + 0.25 * u[4]
        aa = cv2.LINE_AA

        def polygon(points: np.ndarray) -> np.ndarray:
            """Scale unit-shape points by radius (y by aspect), rotate, move to the centre."""
            x, y = points[:, 0] * radius, points[:, 1] * radius * aspect
            ca, sa = math.cos(angle), math.sin(angle)
            px = cx + x * ca - y * sa
            py = cy + x * sa + y * ca
            return np.rint(np.stack([px, py], axis=1)).astype(np.int32)

        if shape == "circle":
            axes = (max(1, round(radius)), max(1, round(radius * aspect)))
            cv2.ellipse(image, (round(cx), round(cy)), axes, math.degrees(angle), 0, 360, color, -1, aa)
        elif shape == "ring":
            thick = max(2, round(radius * 0.35))
            axes = (max(1, round(radius - thick / 2)), max(1, round((radius - thick / 2) * aspect)))
            cv2.ellipse(image, (round(cx), round(cy)), axes, math.degrees(angle), 0, 360, color, thick, aa)
        elif shape == "stripes":
            # Parallel bands across the whole frame at a random angle and period.
            period = short * (0.14 + 0.08 * u[5])
            thick = max(2, round(period * (0.25 + 0.15 * u[6])))
            dx, dy = math.cos(angle), math.sin(angle)  # along the stripe
            nx, ny = -dy, dx  # across stripes
            reach = math.hypot(w, h)
            phase = period * u[7]
            k = -math.ceil(reach / period) - 1
            while k * period <= reach:
                ox = w / 2 + nx * (k * period + phase)
                oy = h / 2 + ny * (k * period + phase)
                p1 = (round(ox - dx * reach), round(oy - dy * reach))
                p2 = (round(ox + dx * reach), round(oy + dy * reach))
                cv2.line(image, p1, p2, color, thick, aa)
                k += 1
        elif shape == "dots":
            count = int(rng.integers(7, 14))
            for _ in range(count):
                r = max(2, round(short * rng.uniform(0.035, 0.065)))
                center = (int(rng.integers(r, max(r + 1, w - r))), int(rng.integers(r, max(r + 1, h - r))))
                cv2.circle(image, center, r, color, -1, aa)
        else:
            cv2.fillPoly(image, [polygon(_UNIT_SHAPES[shape])], color, aa)


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    a = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    a = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


_ARM = 0.3
_UNIT_SHAPES: dict[str, np.ndarray] = {
    "triangle": _regular(3, -math.pi / 2),
    "square": _regular(4, math.pi / 4) * math.sqrt(2) * 0.8,
    "star": _star(),
    "cross": np.asarray(
        [
            (-_ARM, -1), (_ARM, -1), (_ARM, -_ARM), (1, -_ARM), (1, _ARM), (_ARM, _ARM),
            (_ARM, 1), (-_ARM, 1), (-_ARM, _ARM), (-1, _ARM), (-1, -_ARM), (-_ARM, -_ARM),
        ],
        dtype=np.float64,
    ),
}  # fmt: skip


def iter_samples(
    scenes: SyntheticScenes, per_class: int, start_index: int = 0
) -> Iterator[tuple[str, int, np.ndarray]]:
    """Yield ``(class_name, index, image)`` for ``per_class`` frames of every class, class-interleaved.

    Indices ``start_index .. start_index + per_class - 1``; use disjoint ranges for train and test.
    """
    if per_class < 0 or start_index < 0:
        raise ConfigError(f"per_class and start_index must be >= 0, got {per_class}, {start_index}")
    for index in range(start_index, start_index + per_class):
        for name in scenes.classes:
            yield name, index, scenes.render(name, index)


_TARGET_NAMES = ("TargetScenes", "make_xy_dataset", "make_multilabel_dataset", "write_jetbot_folder")


def __getattr__(name: str):
    """The regression and multi-label scenes live in :mod:`.synthetic_targets`; reachable from here too."""
    if name in _TARGET_NAMES:
        from dli_perception.core import synthetic_targets

        return getattr(synthetic_targets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
