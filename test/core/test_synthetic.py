"""Synthetic scenes: determinism, class separation on fresh frames, schedule, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dli_perception.core.synthetic import (
    DEFAULT_CLASSES,
    MAX_CLASSES,
    SHAPES,
    THUMBS_CLASSES,
    SyntheticScenes,
    iter_samples,
)
from dli_perception.errors import ConfigError


def _hist(image: np.ndarray, hue_bins: int = 24, sat_bins: int = 4) -> np.ndarray:
    """Hue x saturation colour histogram (lighting-tolerant), normalised to sum 1."""
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [hue_bins, sat_bins], [0, 180, 0, 256]).ravel()
    return hist / hist.sum()


def _nearest_centroid_accuracy(scenes: SyntheticScenes, train_per_class: int, test_per_class: int) -> float:
    train = list(iter_samples(scenes, train_per_class, start_index=0))
    test = list(iter_samples(scenes, test_per_class, start_index=10_000))  # fresh frames, disjoint indices
    centroids = np.stack(
        [np.mean([_hist(img) for name, _, img in train if name == cls], axis=0) for cls in scenes.classes]
    )
    correct = 0
    for name, _, img in test:
        guess = int(np.argmin(np.abs(centroids - _hist(img)).sum(axis=1)))
        correct += scenes.classes[guess] == name
    return correct / len(test)


@pytest.mark.parametrize("width,height", [(640, 480), (1280, 720), (97, 61)])
def test_render_shape_dtype_contiguous(width: int, height: int) -> None:
    scenes = SyntheticScenes(DEFAULT_CLASSES, width, height)
    image = scenes.render("blocked", 3)
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    assert image.flags.c_contiguous
    assert image.std() > 5  # not a flat fill


def test_deterministic_for_class_seed_index() -> None:
    a = SyntheticScenes(THUMBS_CLASSES, 160, 120, seed=7)
    b = SyntheticScenes(THUMBS_CLASSES, 160, 120, seed=7)
    for cls, index in itertools.product(THUMBS_CLASSES, (0, 1, 123)):
        np.testing.assert_array_equal(a.render(cls, index), b.render(cls, index))
    # order of calls does not matter
    first = a.render("thumbs_up", 5)
    a.render("thumbs_down", 9)
    np.testing.assert_array_equal(a.render("thumbs_up", 5), first)


def test_seed_and_index_change_the_frame() -> None:
    a = SyntheticScenes(DEFAULT_CLASSES, 160, 120, seed=0)
    c = SyntheticScenes(DEFAULT_CLASSES, 160, 120, seed=1)
    assert not np.array_equal(a.render("free", 0), a.render("free", 1))
    assert not np.array_equal(a.render("free", 0), c.render("free", 0))


def test_generator_argument_is_consumed() -> None:
    scenes = SyntheticScenes(DEFAULT_CLASSES, 64, 48)
    rng = np.random.default_rng(3)
    x, y = scenes.render("free", rng), scenes.render("free", rng)
    assert not np.array_equal(x, y)
    np.testing.assert_array_equal(x, scenes.render("free", np.random.default_rng(3)))


def test_render_by_index_equals_by_name() -> None:
    scenes = SyntheticScenes(("a", "b", "c"), 80, 60)
    np.testing.assert_array_equal(scenes.render(2, 4), scenes.render("c", 4))
    assert scenes.style("c").shape == SHAPES[2]


def test_same_class_frames_vary() -> None:
    scenes = SyntheticScenes(DEFAULT_CLASSES, 160, 120)
    for cls in DEFAULT_CLASSES:
        frames = [scenes.render(cls, i).astype(np.int16) for i in range(6)]
        diffs = [np.abs(x - y).mean() for x, y in itertools.combinations(frames, 2)]
        assert min(diffs) > 3.0, f"frames of {cls} are near-identical"


@pytest.mark.parametrize("classes", [DEFAULT_CLASSES, THUMBS_CLASSES, 4, MAX_CLASSES])
def test_nearest_centroid_on_colour_histograms_separates_fresh_frames(classes) -> None:
    scenes = SyntheticScenes(classes, 96, 72, seed=3)
    assert _nearest_centroid_accuracy(scenes, train_per_class=6, test_per_class=20) > 0.95


def test_mean_colours_of_classes_are_far_apart() -> None:
    scenes = SyntheticScenes(MAX_CLASSES, 96, 72, seed=11)
    means = {
        cls: np.array([scenes.render(cls, i).reshape(-1, 3).mean(axis=0) for i in range(12)]) for cls in scenes.classes
    }
    for a, b in itertools.combinations(scenes.classes, 2):
        between = np.linalg.norm(means[a].mean(axis=0) - means[b].mean(axis=0))
        within = max(np.linalg.norm(means[c] - means[c].mean(axis=0), axis=1).mean() for c in (a, b))
        assert between > 1.5 * within, f"{a} and {b} mean colours overlap ({between:.1f} vs {within:.1f})"


def test_class_at_cycles_with_period() -> None:
    scenes = SyntheticScenes(("a", "b", "c"), 32, 32, scene_period=2.0)
    assert [scenes.class_at(t) for t in (0.0, 1.99, 2.0, 4.5, 6.0, 7.9)] == ["a", "a", "b", "c", "a", "a"]
    assert scenes.class_at(1.0, scene_period=0.5) == "c"
    with pytest.raises(ConfigError):
        scenes.class_at(1.0, scene_period=0)


def test_class_count_and_comma_string() -> None:
    assert SyntheticScenes(3, 32, 32).classes == ("class_0", "class_1", "class_2")
    assert SyntheticScenes("x, y", 32, 32).classes == ("x", "y")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classes": ()},
        {"classes": tuple(f"c{i}" for i in range(MAX_CLASSES + 1))},
        {"classes": MAX_CLASSES + 1},
        {"classes": ("a", "a")},
        {"classes": ("a", "")},
        {"width": 8},
        {"scene_period": 0},
        {"seed": -1},
    ],
)
def test_bad_configuration_raises_config_error(kwargs) -> None:
    args = {"classes": DEFAULT_CLASSES, "width": 32, "height": 32} | kwargs
    with pytest.raises(ConfigError):
        SyntheticScenes(**args)


def test_unknown_class_and_bad_index_raise_config_error() -> None:
    scenes = SyntheticScenes(DEFAULT_CLASSES, 32, 32)
    with pytest.raises(ConfigError, match="unknown synthetic class 'thumbs_up'"):
        scenes.render("thumbs_up", 0)
    with pytest.raises(ConfigError):
        scenes.render(2, 0)
    with pytest.raises(ConfigError):
        scenes.render("free", -1)
    with pytest.raises(ConfigError):
        list(iter_samples(scenes, -1))
