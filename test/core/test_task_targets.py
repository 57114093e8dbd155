"""Task-specific training pieces without a network: metrics, threshold tuning, pos_weight, augmentation, task choice."""

from __future__ import annotations

import numpy as np
import pytest

from dli_perception.core import tasks
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.core.training import TrainConfig
from dli_perception.core.training.data import augment_sample
from dli_perception.core.training.targets import (
    POS_WEIGHT_RANGE,
    TaskHead,
    multilabel_metrics,
    regression_metrics,
    tune_thresholds,
)
from dli_perception.errors import ConfigError


def test_regression_metrics_and_baseline():
    target = np.array([[0.0, 0.0], [0.6, -0.8], [-0.5, 0.5]])
    pred = target + np.array([[0.3, 0.4], [0.0, 0.0], [-0.3, 0.0]])
    m = regression_metrics(pred, target, baseline_xy=[0.0, 0.0])
    assert m["mean_error"] == pytest.approx((0.5 + 0.0 + 0.3) / 3)
    assert m["mae_x"] == pytest.approx(0.2) and m["mae_y"] == pytest.approx(0.4 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 0.09) / 3))
    base = (0.0 + 1.0 + np.hypot(0.5, 0.5)) / 3
    assert m["baseline_mean_error"] == pytest.approx(base)
    assert m["error_vs_baseline"] == pytest.approx(m["mean_error"] / base)


def test_thresholds_tuned_for_best_f1_and_default_without_positives():
    labels = ["cup", "ball", "never"]
    # cup: positives score 0.3-0.4, negatives 0.1-0.2 -> any threshold in (0.2, 0.3] separates them
    scores = np.array([[0.35, 0.9, 0.2], [0.3, 0.8, 0.7], [0.1, 0.2, 0.1], [0.2, 0.1, 0.3]])
    truth = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
    t = tune_thresholds(scores, truth, labels)
    assert 0.2 < t["cup"] <= 0.3
    assert 0.2 < t["ball"] <= 0.8 and abs(t["ball"] - 0.5) < 1e-9  # ties go to the threshold nearest 0.5
    assert t["never"] == tasks.DEFAULT_THRESHOLD  # no positive in validation: F1 says nothing
    m = multilabel_metrics(scores, truth, labels, t)
    assert m["per_label"]["cup"]["f1"] == 1.0 and m["per_label"]["ball"]["f1"] == 1.0
    assert m["per_label"]["never"]["precision"] == 0.0  # 0.7 >= 0.5 is one false positive
    assert m["exact_match"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    # micro: tp 4, fp 1, fn 0
    assert m["micro_f1"] == pytest.approx(2 * 0.8 * 1.0 / 1.8)


def test_pos_weight_is_negatives_over_positives_clipped():
    y = np.zeros((100, 3), np.float32)
    y[:50, 0] = 1  # 50/50 -> 1
    y[:1, 1] = 1  # 99/1 -> clipped to the top of the range
    y[:, 2] = 1  # 0/100 -> clipped to the bottom
    head = TaskHead(tasks.MULTILABEL, ["a", "b", "c"], y)
    assert head.pos_weight().tolist() == pytest.approx([1.0, POS_WEIGHT_RANGE[1], POS_WEIGHT_RANGE[0]])


def test_regression_head_baseline_and_metric_direction():
    y = np.array([[0.5, -0.5], [0.1, 0.3]], np.float32)
    head = TaskHead(tasks.REGRESSION, ["x", "y"], y)
    assert head.baseline_xy == pytest.approx([0.3, -0.1])
    assert head.metric_name == "mean_error" and head.metric_of(-0.2) == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="loss"):
        TaskHead(tasks.REGRESSION, ["x", "y"], y, loss="l3")


def test_regression_flip_negates_x_and_never_crops():
    """A flipped training view has its target mirrored; with crops off the dot stays where the target says."""
    pytest.importorskip("cv2")
    import cv2

    cfg = PreprocessConfig.for_size(64)
    img = np.zeros((48, 80, 3), np.uint8)  # not square: squash keeps the whole frame
    xy = np.array([0.5, -0.25], np.float32)
    px, py = tasks.xy_to_pixels(*xy, 80, 48)
    cv2.circle(img, (round(px), round(py)), 3, (255, 255, 255), -1)
    train = TrainConfig(weights="none", hflip=True, color_jitter=0.0, preprocess=cfg)
    flips = 0
    for seed in range(12):
        view, target = augment_sample(img, xy, cfg, train, np.random.default_rng(seed), tasks.REGRESSION)
        ys, xs = np.nonzero(view[..., 0] > 128)
        dot = tasks.pixels_to_xy(xs.mean() + 0.5, ys.mean() + 0.5, 64, 64)
        assert dot == pytest.approx(tuple(target), abs=0.06)  # the drawn dot is where the target says
        flips += bool(target[0] < 0)
        assert target[1] == pytest.approx(-0.25)
    assert 0 < flips < 12


def test_task_option_is_checked():
    with pytest.raises(ConfigError, match="task"):
        TrainConfig(weights="none", task="segmentation")
    with pytest.raises(ConfigError, match="loss"):
        TrainConfig(weights="none", loss="huber")


def test_progress_contract_carries_the_task_metric():
    from dli_perception.core.contracts import TrainProgress
    from dli_perception.core.training import ProgressEvent

    event = ProgressEvent(
        "epoch", 3, 12, task="regression", metric_name="mean_error", metric=0.21, val_metric=0.18, best_val_metric=0.17
    )
    got = TrainProgress.decode(TrainProgress.from_dict(event.to_dict()).encode())
    assert (got.task, got.metric_name, got.val_metric, got.best_val_metric) == ("regression", "mean_error", 0.18, 0.17)
    assert got.accuracy is None and TrainProgress.from_dict({"phase": "val", "epoch": 1, "epochs": 2}).metric is None


def test_training_data_of_synthetic_target_datasets(tmp_path):
    """The split is DatasetStore.split(); multi-label outputs are the declared vocabulary (labels.txt) too."""
    pytest.importorskip("cv2")
    from dli_perception.core.dataset import DatasetStore
    from dli_perception.core.synthetic_targets import make_multilabel_dataset, make_xy_dataset
    from dli_perception.core.training import load_data

    make_xy_dataset(tmp_path / "xy", 20, size=32, seed=1)
    data = load_data(tmp_path / "xy", TrainConfig(weights="none", val_fraction=0.25, seed=3))
    with DatasetStore(tmp_path / "xy", readonly=True) as store:
        train, val = store.split(0.25, 3)
        by_file = {str(store.path_of(e)): e.xy for e in store.entries}
    assert data.task == tasks.REGRESSION and data.classes == ["x", "y"]
    assert [p for p, _ in data.val] == [str(store.path_of(e)) for e in val] and len(data.train) == len(train)
    assert all(tuple(t) == pytest.approx(by_file[p]) for p, t in data.train)

    make_multilabel_dataset(tmp_path / "ml", 16, size=32, seed=2)
    with DatasetStore(tmp_path / "ml") as store:
        used = sorted({n for e in store.entries for n in e.labels})
        store.declare_labels([*used, "zebra"])
    data = load_data(tmp_path / "ml", TrainConfig(weights="none"))
    assert data.task == tasks.MULTILABEL and data.classes == sorted([*used, "zebra"])
    targets = data.targets(data.train + data.val)
    assert targets.shape == (16, len(data.classes)) and not targets[:, data.classes.index("zebra")].any()
