"""Annotating a frame with a classification: the label, its score as a bar, and the top classes' bars.

What a person watching ``~/overlay`` (rqt_image_view, Foxglove) sees: a dark banner across the
top of the frame with ``label  87%``, a bar as long as the score (green for a class, orange for
the unknown label), and optionally one thin bar per class below it, highest first.
Sizes follow the frame width, so a 160x120 and a 1280x720 frame both stay readable.
The input frame is never modified (it may be a read-only view of a message buffer).

The other tasks have their own drawings: :func:`draw_xy_overlay` marks a regression model's target
point with a crosshair (the smoothed point) and a dot (this frame's raw point) and writes ``x y``
in the banner; :func:`draw_labels_overlay` writes a multi-label model's active labels in the banner
with one bar per label (active ones in the known colour) and a tick at each label's threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dli_perception.errors import ConfigError

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class OverlayStyle:
    """Colours (RGB) and layout of the overlay.

    ``max_classes`` per-class bars are drawn under the main bar (0: none); ``banner_alpha`` in
    [0, 1] is how dark the banner behind the text is (1: opaque black).
    """

    known_colour: RGB = (40, 200, 80)
    unknown_colour: RGB = (240, 150, 30)
    class_colour: RGB = (90, 160, 240)
    text_colour: RGB = (255, 255, 255)
    banner_alpha: float = 0.6
    max_classes: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.banner_alpha <= 1.0:
            raise ConfigError(f"banner_alpha must be in [0, 1], got {self.banner_alpha}")
        if self.max_classes < 0:
            raise ConfigError(f"max_classes must be >= 0, got {self.max_classes}")


@dataclass(frozen=True)
class OverlayLayout:
    """Pixel geometry of the overlay for one frame size (all values in pixels)."""

    pad: int
    font_scale: float
    thickness: int
    line_height: int
    bar_height: int
    bar_left: int
    bar_width: int
    banner_height: int
    class_rows: int


def _cv2():
    import cv2  # deferred: importing cv2 costs ~100 ms and nodes import this module at start

    return cv2


def layout(height: int, width: int, num_classes: int, style: OverlayStyle | None = None) -> OverlayLayout:
    """Where things go on a ``height`` x ``width`` frame with ``num_classes`` per-class bars wanted."""
    style = style or OverlayStyle()
    font_scale = min(2.0, max(0.3, width / 900.0))
    thickness = 1 if font_scale < 0.8 else 2
    pad = max(2, round(width / 100))
    line_height = max(8, round(26 * font_scale))
    bar_height = max(2, line_height // 4)
    class_row = max(4, line_height // 2)
    # The banner holds the text line, the main bar and as many class rows as fit in half the frame.
    base = pad + line_height + bar_height + pad
    fit = max(0, (height // 2 - base) // (class_row + 1))
    rows = min(num_classes, style.max_classes, fit)
    banner = min(height, base + rows * (class_row + 1) + (pad if rows else 0))
    return OverlayLayout(
        pad=pad,
        font_scale=font_scale,
        thickness=thickness,
        line_height=line_height,
        bar_height=bar_height,
        bar_left=pad,
        bar_width=max(1, width - 2 * pad),
        banner_height=banner,
        class_rows=rows,
    )


def _fraction(value: float) -> float:
    value = float(value)
    return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))


def draw_overlay(
    image: np.ndarray,
    label: str,
    score: float,
    scores: Mapping[str, float] | None = None,
    *,
    unknown: bool = False,
    style: OverlayStyle | None = None,
) -> np.ndarray:
    """A copy of the ``HxWx3`` uint8 RGB ``image`` annotated with ``label``, ``score`` (0-1) and ``scores``.

    ``unknown`` draws the main bar in the unknown colour (the label is the unknown label).
    ``scores`` maps class names to probabilities; the highest ``style.max_classes`` get a thin bar.
    Raises :class:`ConfigError` when ``image`` is not an RGB uint8 frame.
    """
    style = style or OverlayStyle()
    out = _copy_frame(image, "draw_overlay")
    h, w = out.shape[:2]
    cv2 = _cv2()
    ranked = sorted((scores or {}).items(), key=lambda kv: -_fraction(kv[1]))
    geo = layout(h, w, len(ranked), style)

    _banner(out, geo, f"{label}  {round(100 * _fraction(score))}%", style)
    y = geo.pad + geo.line_height
    colour = style.unknown_colour if unknown else style.known_colour
    _bar(out, geo.bar_left, y, geo.bar_width, geo.bar_height, _fraction(score), colour)

    row = max(4, geo.line_height // 2)
    y += geo.bar_height + geo.pad
    small = geo.font_scale * 0.5
    for name, prob in ranked[: geo.class_rows]:
        label_w = geo.bar_width // 3
        cv2.putText(
            out,
            str(name)[:24],
            (geo.pad, y + row - 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            small,
            style.text_colour,
            1,
            cv2.LINE_AA,
        )
        _bar(
            out,
            geo.bar_left + label_w,
            y + row // 4,
            geo.bar_width - label_w,
            max(1, row // 2),
            _fraction(prob),
            style.class_colour,
        )
        y += row + 1
    return out


def _bar(img: np.ndarray, x: int, y: int, width: int, height: int, fraction: float, colour: RGB) -> None:
    """Fill ``fraction`` of a ``width`` x ``height`` bar at (x, y), clipped to the image."""
    h, w = img.shape[:2]
    length = round(width * fraction)
    y0, y1 = max(0, y), min(h, y + height)
    x0, x1 = max(0, x), min(w, x + length)
    if y1 > y0 and x1 > x0:
        img[y0:y1, x0:x1] = colour


def _copy_frame(image: np.ndarray, what: str) -> np.ndarray:
    """A writable C-contiguous copy of an ``HxWx3`` uint8 frame; :class:`ConfigError` for anything else."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        raise ConfigError(f"{what} expects an HxWx3 uint8 RGB frame, got shape {shape} dtype {dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ConfigError(f"{what} got an empty frame of shape {image.shape}")
    return np.array(image, dtype=np.uint8, order="C", copy=True)


def _banner(out: np.ndarray, geo: OverlayLayout, text: str, style: OverlayStyle) -> None:
    """Darken the banner and write ``text`` in it."""
    cv2 = _cv2()
    banner = out[: geo.banner_height]
    np.multiply(banner, 1.0 - style.banner_alpha, out=banner, casting="unsafe")
    baseline_y = min(out.shape[0] - 1, geo.pad + geo.line_height - max(1, geo.line_height // 5))
    cv2.putText(
        out, text, (geo.pad, baseline_y), cv2.FONT_HERSHEY_SIMPLEX, geo.font_scale, style.text_colour,
        geo.thickness, cv2.LINE_AA,
    )  # fmt: skip


def xy_pixel(x: float, y: float, height: int, width: int) -> tuple[int, int]:
    """The pixel (column, row) of the normalised point ``(x, y)`` in a ``height`` x ``width`` frame, clipped to it."""
    from dli_perception.core.tasks import xy_to_pixels

    px, py = xy_to_pixels(x if math.isfinite(x) else 0.0, y if math.isfinite(y) else 0.0, width, height)
    return min(width - 1, max(0, int(px))), min(height - 1, max(0, int(py)))


def draw_xy_overlay(
    image: np.ndarray,
    x: float,
    y: float,
    raw: tuple[float, float] | None = None,
    *,
    style: OverlayStyle | None = None,
) -> np.ndarray:
    """A copy of ``image`` with the regression target ``(x, y)`` (normalised, centre 0, x right, y down).

    A crosshair in the known colour marks ``(x, y)`` (clipped to the frame), a dot in the class colour
    the unsmoothed point ``raw`` when given; the banner reads ``x 0.12  y -0.40``.
    """
    style = style or OverlayStyle()
    out = _copy_frame(image, "draw_xy_overlay")
    h, w = out.shape[:2]
    geo = layout(h, w, 0, style)
    _banner(out, geo, f"x {x:+.2f}  y {y:+.2f}", style)
    cv2 = _cv2()
    arm = max(3, round(min(h, w) / 12))
    line = max(1, round(min(h, w) / 160))
    if raw is not None:
        cv2.circle(out, xy_pixel(raw[0], raw[1], h, w), max(2, arm // 3), style.class_colour, -1, cv2.LINE_AA)
    cx, cy = xy_pixel(x, y, h, w)
    cv2.line(out, (cx - arm, cy), (cx + arm, cy), style.known_colour, line)
    cv2.line(out, (cx, cy - arm), (cx, cy + arm), style.known_colour, line)
    cv2.circle(out, (cx, cy), max(2, arm // 2), style.known_colour, line)
    return out


def draw_labels_overlay(
    image: np.ndarray,
    active: tuple[str, ...] | list[str],
    scores: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
    *,
    style: OverlayStyle | None = None,
) -> np.ndarray:
    """A copy of ``image`` with a multi-label result: the active labels (or ``none``) in the banner and
    one bar per label (highest score first, up to ``style.max_classes``): the known colour when active,
    else the class colour, with a tick in the text colour at the label's threshold."""
    style = style or OverlayStyle()
    out = _copy_frame(image, "draw_labels_overlay")
    h, w = out.shape[:2]
    ranked = sorted(scores.items(), key=lambda kv: -_fraction(kv[1]))
    geo = layout(h, w, len(ranked), style)
    _banner(out, geo, ", ".join(active) if active else "none", style)
    cv2 = _cv2()
    row = max(4, geo.line_height // 2)
    y = geo.pad + geo.line_height + geo.bar_height + geo.pad
    label_w = geo.bar_width // 3
    for name, score in ranked[: geo.class_rows]:
        cv2.putText(
            out, str(name)[:24], (geo.pad, y + row - 1), cv2.FONT_HERSHEY_SIMPLEX, geo.font_scale * 0.5,
            style.text_colour, 1, cv2.LINE_AA,
        )  # fmt: skip
        left, width, height = geo.bar_left + label_w, geo.bar_width - label_w, max(1, row // 2)
        colour = style.known_colour if name in active else style.class_colour
        _bar(out, left, y + row // 4, width, height, _fraction(score), colour)
        if thresholds and name in thresholds:
            tick = left + round(width * _fraction(thresholds[name]))
            _bar(out, min(tick, left + width - 1), y, 1, row, 1.0, style.text_colour)
        y += row + 1
    return out
