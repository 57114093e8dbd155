"""Synthetic scenes for the regression and multi-label tasks, and datasets built from them.

* XY (regression): a textured background with grey distractors and one *target dot* (a bright
  red disc with a dark rim) whose centre is the image's XY target (normalised, see
  :mod:`dli_perception.core.tasks`). :meth:`TargetScenes.render_xy` draws the dot where the caller
  says, so a demo can move it; :func:`make_xy_dataset` picks random positions.
* Multi-label: each label has a fixed shape and colour; a frame shows any subset of them
  (:meth:`TargetScenes.render_labels`). :func:`make_multilabel_dataset` draws each label present
  with probability one half.
* :func:`write_jetbot_folder` writes XY scenes in the JetBot road-following layout
  (``xy_<px>_<py>_<id>.jpg`` in one folder, pixel coordinates), as that robot's collection notebook does.

Frames are pure functions of ``(width, height, seed, index, target)``. Tests and demos use these
(a model trained on them learns from random weights; ImageNet weights are not available here).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from dli_perception.core import tasks
from dli_perception.errors import ConfigError

DEFAULT_LABELS: tuple[str, ...] = ("circle", "square", "triangle")
"""The labels of :func:`make_multilabel_dataset` unless told otherwise."""

_LABEL_SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")
_LABEL_COLOURS = ((240, 60, 60), (60, 200, 255), (255, 220, 40), (80, 240, 90), (250, 130, 250), (255, 150, 40))
_TARGET_COLOUR = (235, 30, 30)
_RIM_COLOUR = (20, 20, 20)


def _cv2():
    import cv2  # deferred like core.synthetic: cheap import for modules that only need the names

    return cv2


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    width, height = (size, size) if isinstance(size, (int, np.integer)) else size
    width, height = int(width), int(height)
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ConfigError(f"synthetic frame size must be 16..8192 pixels each way, got {width}x{height}")
    return width, height


class TargetScenes:
    """Renders ``height x width x 3`` uint8 RGB frames with an XY target dot or a set of labelled shapes.

    ``labels`` names the multi-label shapes (at most six); a label named like a shape
    (circle, square, triangle, cross, ring, star) is drawn as that shape, others take the next free one.
    """

    def __init__(
        self,
        width: int = 96,
        height: int = 96,
        seed: int = 0,
        labels: Sequence[str] = DEFAULT_LABELS,
    ) -> None:
        self.width, self.height = _size((width, height))
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.labels = tasks.validate_label_set(labels)  # sorted, checked like class names
        if not self.labels or len(self.labels) > len(_LABEL_SHAPES):
            raise ConfigError(f"synthetic multi-label scenes need 1 to {len(_LABEL_SHAPES)} labels, got {labels!r}")
        free = [s for s in _LABEL_SHAPES if s not in self.labels]
        self.shapes = {label: label if label in _LABEL_SHAPES else free.pop(0) for label in self.labels}
        self.colours = {label: _LABEL_COLOURS[_LABEL_SHAPES.index(self.shapes[label])] for label in self.labels}

    # -------------------------------------------------------------- pieces

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A dim gradient in a random blue-green-grey tone with grey distractor blobs and noise."""
        cv2 = _cv2()
        h, w = self.height, self.width
        base = rng.uniform(50, 130, size=3).astype(np.float32)
        vertical = rng.uniform() < 0.5
        ramp = np.linspace(1.0 - rng.uniform(0, 0.4), 1.0, h if vertical else w, dtype=np.float32)
        line = np.clip(ramp[:, None] * base[None, :], 0, 255).astype(np.uint8)
        image = np.empty((h, w, 3), dtype=np.uint8)
        image[...] = line[:, None, :] if vertical else line[None, :, :]
        short = min(h, w)
        for _ in range(int(rng.integers(0, 3))):
            g = int(rng.integers(60, 200))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            radius = max(1, int(short * rng.uniform(0.03, 0.08)))
            cv2.circle(image, centre, radius, (g, g, g), -1, cv2.LINE_AA)
        return image

    def _noise(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = image.astype(np.int16) + rng.normal(0, 4.0, image.shape).round().astype(np.int16)
        return np.ascontiguousarray(np.clip(noisy, 0, 255).astype(np.uint8))

    def _rng(self, kind: int, index: int) -> np.random.Generator:
        if int(index) < 0:
            raise ConfigError(f"frame index must be >= 0, got {index}")
        return np.random.default_rng([self.seed, kind, int(index)])

    # -------------------------------------------------------------- regression

    def render_xy(self, x: float, y: float, index: int = 0) -> np.ndarray:
        """A frame whose target dot is centred at normalised ``(x, y)`` (checked to lie in [-1, 1])."""
        x, y = tasks.validate_xy(x, y)
        cv2 = _cv2()
        rng = self._rng(1, index)
        image = self._background(rng)
        px, py = tasks.xy_to_pixels(x, y, self.width, self.height)
        radius = max(3, round(min(self.width, self.height) * 0.09))
        centre = (round(px), round(py))
        cv2.circle(image, centre, radius + max(1, radius // 3), _RIM_COLOUR, -1, cv2.LINE_AA)
        cv2.circle(image, centre, radius, _TARGET_COLOUR, -1, cv2.LINE_AA)
        return self._noise(image, rng)

    def random_xy(self, index: int, margin: float = 0.9) -> tuple[float, float]:
        """A random target for frame ``index`` (a pure function of seed and index), within ``±margin``."""
        u = self._rng(2, index).uniform(-margin, margin, size=2)
        return float(u[0]), float(u[1])

    # -------------------------------------------------------------- multi-label

    def render_labels(self, labels: Iterable[str], index: int = 0) -> np.ndarray:
        """A frame showing the shapes of ``labels`` (a subset of :attr:`labels`; may be empty)."""
        present = tasks.validate_label_set(labels, known=self.labels)
        cv2 = _cv2()
        rng = self._rng(3, index)
        image = self._background(rng)
        h, w = self.height, self.width
        # One cell of a 2x3 (or 3x2) grid per shape so shapes never hide each other.
        cols, rows = (3, 2) if w >= h else (2, 3)
        cells = rng.permutation(cols * rows)
        for label, cell in zip(present, cells, strict=False):
            cw, ch = w / cols, h / rows
            radius = min(cw, ch) * rng.uniform(0.28, 0.4)
            cx = (cell % cols) * cw + cw / 2 + rng.uniform(-0.1, 0.1) * cw
            cy = (cell // cols) * ch + ch / 2 + rng.uniform(-0.1, 0.1) * ch
            _draw(cv2, image, self.shapes[label], self.colours[label], cx, cy, radius, rng.uniform(0, 2 * math.pi))
        return self._noise(image, rng)

    def random_labels(self, index: int) -> tuple[str, ...]:
        """A random label set for frame ``index``: each label present with probability 1/2."""
        keep = self._rng(4, index).uniform(size=len(self.labels)) < 0.5
        return tuple(label for label, k in zip(self.labels, keep, strict=True) if k)


def _draw(cv2, image: np.ndarray, shape: str, colour, cx: float, cy: float, radius: float, angle: float) -> None:
    aa = cv2.LINE_AA
    if shape == "circle":
        cv2.circle(image, (round(cx), round(cy)), max(2, round(radius)), colour, -1, aa)
        return
    if shape == "ring":
        cv2.circle(image, (round(cx), round(cy)), max(2, round(radius * 0.8)), colour, max(2, round(radius * 0.35)), aa)
        return
    if shape == "square":
        a = angle + np.arange(4) * math.pi / 2 + math.pi / 4
        r = np.full(4, radius)
    elif shape == "triangle":
        a = angle + np.arange(3) * 2 * math.pi / 3
        r = np.full(3, radius * 1.1)
    elif shape == "star":
        a = angle + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius * 1.1, radius * 0.45)
    else:  # cross: two bars
        for t in (angle, angle + math.pi / 2):
            dx, dy = math.cos(t) * radius, math.sin(t) * radius
            cv2.line(image, (round(cx - dx), round(cy - dy)), (round(cx + dx), round(cy + dy)), colour,
                     max(2, round(radius * 0.45)), aa)  # fmt: skip
        return
    pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)
    cv2.fillPoly(image, [np.rint(pts).astype(np.int32)], colour, aa)


# ------------------------------------------------------------------ datasets


def make_xy_dataset(root: str | os.PathLike, n: int, size: int | tuple[int, int] = 64, seed: int = 0) -> list:
    """Write ``n`` XY scenes into the dataset at ``root`` (created if needed) through
    :meth:`DatasetStore.add` with ``xy=``; return their manifest entries (target in ``entry.xy``)."""
    from dli_perception.core.dataset import DatasetStore

    width, height = _size(size)
    scenes = TargetScenes(width, height, seed)
    files = []
    with DatasetStore(root) as store:
        with store.batch():
            for i in range(int(n)):
                x, y = scenes.random_xy(i)
                files.append(store.add(scenes.render_xy(x, y, i), xy=(x, y), source="synthetic").file)
        return _entries_of(store, files)


def make_multilabel_dataset(
    root: str | os.PathLike,
    n: int,
    size: int | tuple[int, int] = 64,
    seed: int = 0,
    labels: Sequence[str] = DEFAULT_LABELS,
) -> list:
    """Write ``n`` multi-label scenes into the dataset at ``root`` through :meth:`DatasetStore.add`
    with ``labels=``; return their manifest entries (label set in ``entry.labels``)."""
    from dli_perception.core.dataset import DatasetStore

    width, height = _size(size)
    scenes = TargetScenes(width, height, seed, labels)
    files = []
    with DatasetStore(root) as store:
        with store.batch():
            for i in range(int(n)):
                present = scenes.random_labels(i)
                files.append(store.add(scenes.render_labels(present, i), labels=present, source="synthetic").file)
        return _entries_of(store, files)


def _entries_of(store, files: list[str]) -> list:
    by_file = {entry.file: entry for entry in store.entries}
    return [by_file[f] for f in files]


def write_jetbot_folder(
    directory: str | os.PathLike, n: int, size: int | tuple[int, int] = 224, seed: int = 0
) -> list[tuple[Path, tuple[int, int]]]:
    """Write ``n`` XY scenes as JPEGs named ``xy_<px>_<py>_<uuid>.jpg`` into ``directory`` (the JetBot
    road-following layout: whole pixel coordinates of the target in that image).

    Returns ``(path, (px, py))`` per file. The dot is drawn at the rounded pixel, so the name is exact.
    """
    cv2 = _cv2()
    width, height = _size(size)
    scenes = TargetScenes(width, height, seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(int(n)):
        x, y = scenes.random_xy(i)
        px, py = (round(v) for v in tasks.xy_to_pixels(x, y, width, height))
        x, y = tasks.pixels_to_xy(px, py, width, height)
        ident = uuid.UUID(int=int(np.random.default_rng([seed, 5, i]).integers(0, 2**63)) << 64 | i, version=1)
        path = directory / f"xy_{px:03d}_{py:03d}_{ident}.jpg"
        bgr = cv2.cvtColor(scenes.render_xy(x, y, i), cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise ConfigError(f"could not encode synthetic frame {i} as JPEG")
        path.write_bytes(data.tobytes())
        out.append((path, (px, py)))
    return out
