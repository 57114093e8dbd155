"""The one preprocessing definition: geometry, normalisation, metadata round trip, errors."""

from __future__ import annotations

import numpy as np
import pytest

from dli_perception.core.preprocess import (
    PreprocessConfig,
    denormalize,
    normalize,
    preprocess,
    preprocess_batch,
    resize,
    train_view,
    view_rect,
)
from dli_perception.errors import ConfigError


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_normalize_matches_torchvision_to_tensor_and_normalize():
    torch = pytest.importorskip("torch")
    from torchvision.transforms import functional as F

    cfg = PreprocessConfig(size=32)
    img = _image(32, 32)
    expected = F.normalize(F.to_tensor(img), cfg.mean, cfg.std).numpy()
    got = normalize(img, cfg)
    assert got.dtype == np.float32 and got.shape == (3, 32, 32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert torch.is_tensor(F.to_tensor(img))


def test_squash_keeps_the_whole_field_of_view():
    cfg = PreprocessConfig(size=64)
    img = np.zeros((48, 128, 3), np.uint8)
    img[:, :64] = 255  # left half white: after squashing, still the left half
    out = resize(img, cfg)
    assert out.shape == (64, 64, 3)
    assert out[:, :30].min() == 255 and out[:, 34:].max() == 0


def test_shorter_side_crop_takes_the_centre():
    cfg = PreprocessConfig(size=32, resize_size=32, resize_mode="shorter_side_crop", interpolation="nearest")
    img = np.zeros((32, 96, 3), np.uint8)
    img[:, 32:64] = 200  # the centre third
    out = resize(img, cfg)
    assert out.shape == (32, 32, 3)
    assert (out == 200).all()


def test_batch_equals_single_images_and_denormalize_inverts():
    cfg = PreprocessConfig(size=40)
    imgs = [_image(60, 80, s) for s in range(3)]
    batch = preprocess_batch(imgs, cfg)
    assert batch.shape == (3, 3, 40, 40) and batch.flags["C_CONTIGUOUS"]
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(batch[i], preprocess(img, cfg))
    same = _image(40, 40, 7)
    np.testing.assert_array_equal(denormalize(preprocess(same, cfg), cfg), same)


def test_config_round_trips_through_metadata_dict():
    cfg = PreprocessConfig(size=96, resize_mode="shorter_side_crop", resize_size=110, interpolation="area")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 4},
        {"resize_mode": "stretch"},
        {"interpolation": "lanczos9"},
        {"std": (0.1, 0.0, 0.2)},
        {"mean": (0.5, 0.5)},
        {"resize_mode": "shorter_side_crop", "size": 224, "resize_size": 200},
        {"layout": "nhwc"},
    ],
)
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kwargs)


def test_unknown_metadata_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown preprocessing keys"):
        PreprocessConfig.from_dict({"size": 64, "gamma": 2.2})


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        [[1, 2, 3]],
    ],
)
def test_wrong_images_are_refused_with_a_clear_error(bad):
    with pytest.raises(ConfigError):
        preprocess(bad, PreprocessConfig(size=16))


def test_for_size_keeps_the_256_over_224_resize_rule():
    assert PreprocessConfig.for_size(224).resize_size == 256
    assert PreprocessConfig.for_size(112).resize_size == 128
    assert PreprocessConfig.for_size(8).resize_size == 9
    assert PreprocessConfig.for_size(160, resize_mode="shorter_side_crop").resize_mode == "shorter_side_crop"


@pytest.mark.parametrize("mode", ["squash", "shorter_side_crop"])
def test_train_view_without_randomness_is_the_evaluation_view(mode):
    yy, xx = np.mgrid[0:96, 0:128]
    image = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)  # smooth: rounding shows as small
    cfg = PreprocessConfig.for_size(64, resize_mode=mode)
    view = train_view(image, cfg, np.random.default_rng(1), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    assert view.shape == (64, 64, 3) and view.dtype == np.uint8
    x, y, w, h = view_rect(96, 128, cfg)
    if mode == "squash":
        assert (x, y, w, h) == (0.0, 0.0, 128.0, 96.0)
        np.testing.assert_array_equal(view, resize(image, cfg))
    else:
        assert w == h == 96 * 64 / cfg.resize_size and x == (128 - w) / 2
        # the same region as the evaluation crop, up to a pixel of rounding at its edges
        assert np.abs(view.astype(int) - resize(image, cfg).astype(int)).mean() < 3


def test_train_view_crops_jitters_and_flips_from_the_rng():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32] = 200  # bright left half
    cfg = PreprocessConfig(size=32)
    views = [
        train_view(image, cfg, np.random.default_rng(seed), crop_scale=(0.3, 0.5), color_jitter=0.3, hflip=True)
        for seed in range(8)
    ]
    again = train_view(image, cfg, np.random.default_rng(3), crop_scale=(0.3, 0.5), color_jitter=0.3, hflip=True)
    np.testing.assert_array_equal(views[3], again)
    assert len({v.tobytes() for v in views}) == 8
    bright_left = [v[:, :4].mean() > v[:, -4:].mean() for v in views if v[:, :4].mean() != v[:, -4:].mean()]
    assert True in bright_left and False in bright_left  # some views flipped, some not
