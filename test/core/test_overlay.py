"""The classification overlay: the frame is copied, the bars are as long as the scores, bad frames refused."""

from __future__ import annotations

import numpy as np
import pytest

from dli_perception.core.overlay import OverlayStyle, draw_overlay, layout
from dli_perception.errors import ConfigError

STYLE = OverlayStyle()


def _count(img: np.ndarray, colour) -> int:
    return int(np.all(img == np.asarray(colour, np.uint8), axis=-1).sum())


def _grey(h=240, w=320) -> np.ndarray:
    return np.full((h, w, 3), 128, np.uint8)


def test_input_untouched_and_read_only_input_accepted():
    frame = _grey()
    frame.setflags(write=False)
    out = draw_overlay(frame, "free", 0.8, {"free": 0.8, "blocked": 0.2})
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.all(frame == 128)
    assert not np.shares_memory(out, frame)
    geo = layout(240, 320, 2)
    assert np.any(out[: geo.banner_height] != 128)  # banner drawn
    np.testing.assert_array_equal(out[geo.banner_height :], frame[geo.banner_height :])  # rest untouched


def test_main_bar_length_follows_the_score():
    frame = np.zeros((120, 200, 3), np.uint8)
    geo = layout(120, 200, 0)
    lengths = {}
    for score in (0.25, 0.5, 1.0):
        out = draw_overlay(frame, "x", score)
        lengths[score] = _count(out, STYLE.known_colour) / geo.bar_height
    assert lengths[1.0] == geo.bar_width
    assert lengths[0.5] == pytest.approx(geo.bar_width / 2, abs=1)
    assert lengths[0.25] == pytest.approx(geo.bar_width / 4, abs=1)
    assert _count(draw_overlay(frame, "x", 0.0), STYLE.known_colour) == 0
    assert _count(draw_overlay(frame, "x", float("nan")), STYLE.known_colour) == 0


def test_unknown_uses_its_own_colour():
    frame = np.zeros((120, 200, 3), np.uint8)
    out = draw_overlay(frame, "unknown", 0.4, unknown=True)
    assert _count(out, STYLE.unknown_colour) > 0
    assert _count(out, STYLE.known_colour) == 0


def test_class_bars_highest_first_and_limited():
    frame = np.zeros((480, 640, 3), np.uint8)
    scores = {f"c{i}": p for i, p in enumerate([0.05, 0.6, 0.1, 0.2, 0.03, 0.02])}
    style = OverlayStyle(max_classes=3)
    geo = layout(480, 640, len(scores), style)
    assert geo.class_rows == 3
    out = draw_overlay(frame, "c1", 0.6, scores, style=style)
    mask = np.all(out == np.asarray(style.class_colour, np.uint8), axis=-1)
    rows = [r for r in range(out.shape[0]) if mask[r].any()]
    # three bars, lengths in descending order of probability (0.6, 0.2, 0.1)
    bars, current = [], []
    for r in rows:
        if current and r != current[-1] + 1:
            bars.append(current)
            current = []
        current.append(r)
    bars.append(current)
    assert len(bars) == 3
    lengths = [int(mask[b[0]].sum()) for b in bars]
    assert lengths[0] > lengths[1] > lengths[2] > 0
    assert lengths[0] / lengths[1] == pytest.approx(3.0, rel=0.05)


def test_tiny_frames_do_not_fail():
    for h, w in [(16, 16), (1, 1), (20, 300)]:
        out = draw_overlay(np.zeros((h, w, 3), np.uint8), "a-long-label", 0.9, {"a": 0.9, "b": 0.1})
        assert out.shape == (h, w, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        "not an image",
    ],
)
def test_bad_frames_refused(bad):
    with pytest.raises(ConfigError):
        draw_overlay(bad, "x", 0.5)


def test_style_validation():
    with pytest.raises(ConfigError):
        OverlayStyle(banner_alpha=1.5)
    with pytest.raises(ConfigError):
        OverlayStyle(max_classes=-1)


# -- regression and multi-label overlays ----------------------------------------------------------
def test_xy_overlay_draws_the_crosshair_at_the_point():
    from dli_perception.core.overlay import draw_xy_overlay, xy_pixel

    frame = np.zeros((240, 320, 3), np.uint8)
    frame.setflags(write=False)
    for x, y in ((0.5, 0.5), (-0.75, 0.25)):
        out = draw_xy_overlay(frame, x, y, raw=(-0.9, 0.9))
        assert np.all(frame == 0) and out.shape == frame.shape
        cx, cy = xy_pixel(x, y, 240, 320)
        assert (cx, cy) == (round((x + 1) * 160), round((y + 1) * 120))
        green = np.all(out == STYLE.known_colour, axis=-1)
        ys, xs = np.nonzero(green)
        assert abs(xs.mean() - cx) < 1.5 and abs(ys.mean() - cy) < 1.5  # centred on the point
        assert green[cy, cx - 10] and green[cy - 10, cx]  # the arms of the cross
        rx, ry = xy_pixel(-0.9, 0.9, 240, 320)
        assert np.all(out[ry, rx] == STYLE.class_colour)  # the raw point's dot
    # Points outside the frame are clipped to its edge, NaN is drawn at the centre: never an error.
    assert xy_pixel(3.0, -3.0, 240, 320) == (319, 0)
    assert xy_pixel(float("nan"), 0.0, 240, 320) == (160, 120)
    with pytest.raises(ConfigError):
        draw_xy_overlay(np.zeros((4, 4), np.uint8), 0.0, 0.0)


def test_labels_overlay_colours_active_labels_and_marks_thresholds():
    from dli_perception.core.overlay import draw_labels_overlay

    frame = np.zeros((480, 640, 3), np.uint8)
    scores = {"cup": 0.8, "ball": 0.6, "dog": 0.1}
    geo = layout(480, 640, 3)
    bar_w = geo.bar_width - geo.bar_width // 3
    out = draw_labels_overlay(frame, ("cup",), scores, {"cup": 0.5, "ball": 0.7, "dog": 0.5})
    assert _count(out, STYLE.known_colour) > 0 and _count(out, STYLE.class_colour) > 0
    bar_h = max(1, max(4, geo.line_height // 2) // 2)
    # Bar lengths follow the scores (the ticks cut one column from a bar they cross).
    assert _count(out, STYLE.known_colour) / bar_h == pytest.approx(0.8 * bar_w, abs=2)
    assert _count(out, STYLE.class_colour) / bar_h == pytest.approx(0.7 * bar_w, abs=3)
    none = draw_labels_overlay(frame, (), scores)
    assert _count(none, STYLE.known_colour) == 0  # nothing active: no bar in the active colour
