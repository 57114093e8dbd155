"""Synthetic XY and multi-label scenes and the datasets built from them."""

from __future__ import annotations

import numpy as np
import pytest

from dli_perception.core import synthetic, tasks
from dli_perception.core.dataset import DatasetStore
from dli_perception.core.imagefiles import read_rgb
from dli_perception.core.synthetic_targets import TargetScenes
from dli_perception.errors import TargetError


def _red_centre(image: np.ndarray) -> tuple[float, float]:
    r, g, b = (image[..., i].astype(int) for i in range(3))
    ys, xs = np.nonzero((r > 180) & (g < 90) & (b < 90))
    return float(xs.mean()), float(ys.mean())


def test_xy_dot_is_drawn_at_its_target():
    scenes = TargetScenes(96, 64, seed=3)
    for x, y in [(0.0, 0.0), (-0.7, 0.5), (0.8, -0.8)]:
        image = scenes.render_xy(x, y, 5)
        assert image.shape == (64, 96, 3) and image.dtype == np.uint8
        px, py = _red_centre(image)
        ex, ey = tasks.xy_to_pixels(x, y, 96, 64)
        assert abs(px - ex) < 1.5 and abs(py - ey) < 1.5
    np.testing.assert_array_equal(scenes.render_xy(0.1, 0.2, 7), scenes.render_xy(0.1, 0.2, 7))
    with pytest.raises(TargetError):
        scenes.render_xy(1.5, 0.0)


def test_label_scenes_show_only_their_labels():
    scenes = TargetScenes(96, 96, seed=1, labels=("circle", "square", "triangle"))
    empty = scenes.render_labels([], 2)
    full = scenes.render_labels(["circle", "square", "triangle"], 2)
    assert np.abs(full.astype(int) - empty.astype(int)).max() > 100
    with pytest.raises(TargetError, match="unknown"):
        scenes.render_labels(["cup"])


def test_make_datasets(tmp_path):
    entries = synthetic.make_xy_dataset(tmp_path / "xy", 12, size=48, seed=2)
    assert len(entries) == 12 and all(e.task == tasks.REGRESSION for e in entries)
    with DatasetStore(tmp_path / "xy", readonly=True) as store:
        assert store.task == tasks.REGRESSION and len(store) == 12
        image = read_rgb(store.path_of(entries[0]))
        px, py = _red_centre(image)
        ex, ey = tasks.xy_to_pixels(*entries[0].xy, 48, 48)
        assert abs(px - ex) < 2 and abs(py - ey) < 2

    entries = synthetic.make_multilabel_dataset(tmp_path / "ml", 20, size=48, seed=2)
    assert {label for e in entries for label in e.labels} == {"circle", "square", "triangle"}
    assert any(e.labels == () for e in entries) or any(len(e.labels) == 3 for e in entries)
    with DatasetStore(tmp_path / "ml", readonly=True) as store:
        assert store.task == tasks.MULTILABEL and len(store) == 20


def test_jetbot_folder_names_parse(tmp_path):
    files = synthetic.write_jetbot_folder(tmp_path / "apex", 5, size=(120, 80), seed=4)
    assert len(files) == 5 and len({p.name for p, _ in files}) == 5
    for path, (px, py) in files:
        image = read_rgb(path)
        assert image.shape == (80, 120, 3)
        x, y = tasks.jetbot_xy(path.name, 120, 80)
        assert (x, y) == tasks.pixels_to_xy(px, py, 120, 80)
        cx, cy = _red_centre(image)
        assert abs(cx - px) < 2 and abs(cy - py) < 2
