"""LiveClassifier without ROS: the newest-frame slot, hot swap over a refused model, statistics,
and the regression and multi-label tasks (smoothed XY, per-label thresholds, swaps between tasks).

Real models (the tiny ONNX graphs of ``fixtures_models``, whose outputs are known functions of the
frame) on real onnxruntime, real worker and loader threads; frames are rosbags ``sensor_msgs/Image``
messages.
"""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from fixtures_models import (
    build_colour_model_dir,
    build_multilabel_model_dir,
    build_xy_model_dir,
    corrupt_copy,
    expected_label_scores,
    expected_xy,
    halves,
    solid,
)

from dli_perception.core.backend_options import BackendOptions
from dli_perception.core.contracts import ClassList
from dli_perception.core.decision import DecisionConfig
from dli_perception.core.imaging.bagmessages import to_rosbags_image
from dli_perception.core.live_classifier import LiveClassifier, LiveResult, LoadRequest, Outputs
from dli_perception.core.live_stats import STAGES, LiveStats
from dli_perception.core.preprocess import preprocess_batch
from dli_perception.core.task_heads import TaskConfig

DEADLINE_S = 15.0
ONNX = BackendOptions(backend="onnxruntime", device="cpu", threads=1)


def wait_until(predicate, timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def frame(colour, stamp_ns: int, rgb: np.ndarray | None = None, frame_id: str = "cam"):
    header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)
    return to_rosbags_image(solid(colour) if rgb is None else rgb, "rgb8", header=header)


def stamp_of(result: LiveResult) -> int:
    return (result.scores or result.xy or result.label_set).stamp_ns


class Rig:
    """A started LiveClassifier collecting what it outputs; ``gate`` can hold the worker inside a result."""

    def __init__(self, task_config: TaskConfig | None = None) -> None:
        self.labels: list[str] = []
        self.points: list[tuple[float, float, object]] = []
        self.label_sets: list[tuple[str, ...]] = []
        self.results: list[LiveResult] = []
        self.classes: list[ClassList] = []
        self.failed: list[LoadRequest] = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_result = threading.Event()
        outputs = Outputs(
            label=self.labels.append,
            result=self._result,
            classes=self.classes.append,
            point=lambda x, y, header: self.points.append((x, y, header)),
            labels=self.label_sets.append,
        )
        self.core = LiveClassifier(
            DecisionConfig(smoothing="none"), outputs, on_load_failed=self.failed.append, task_config=task_config
        )
        self.core.start()

    def _result(self, result: LiveResult) -> None:
        self.results.append(result)
        self.in_result.set()
        assert self.gate.wait(DEADLINE_S)

    def load(self, model_dir, loads: int) -> None:
        self.core.request_load(str(model_dir), ONNX, "test")
        core = self.core
        assert wait_until(lambda: core.stats.loads == loads and len(self.classes) == loads), core.last_error

    def classify(self, colour, stamp_ns: int, rgb: np.ndarray | None = None) -> LiveResult:
        self.core.offer(frame(colour, stamp_ns, rgb))
        assert wait_until(lambda: any(stamp_of(r) == stamp_ns for r in self.results)), self.core.last_error
        return next(r for r in self.results if stamp_of(r) == stamp_ns)


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.gate.set()
    assert r.core.stop(timeout_s=5.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_models")
    a = build_colour_model_dir(root / "a", ("red", "green", "blue"))
    b = build_colour_model_dir(root / "b", ("cyan", "magenta", "yellow"))
    return {
        "a": a,
        "b": b,
        "corrupt": corrupt_copy(a, root / "corrupt"),
        "xy": build_xy_model_dir(root / "xy"),
        "ml": build_multilabel_model_dir(root / "ml", thresholds={"blue": 0.3}),
    }


def offline(model_dir, rgb: np.ndarray) -> np.ndarray:
    """The raw outputs of one frame through the same backend, without the live classifier."""
    backend, _ = ONNX.load(model_dir)
    try:
        return backend.infer(preprocess_batch([rgb], backend.metadata.preprocess))[0]
    finally:
        backend.close()


def test_frames_without_a_model_are_counted_not_kept(rig):
    rig.core.offer(frame("red", 1))
    assert rig.core.stats.received == rig.core.stats.without_model == 1
    assert rig.core.pending == 0 and rig.core.status() == "waiting for a model"


def test_the_slot_keeps_only_the_newest_frame_and_counts_the_replaced(rig, models):
    rig.load(models["a"], 1)
    rig.gate.clear()  # the worker will stop inside the first result
    rig.core.offer(frame("red", 1))
    assert rig.in_result.wait(DEADLINE_S)
    for stamp, colour in ((2, "green"), (3, "blue"), (4, "green")):
        rig.core.offer(frame(colour, stamp))
    stats = rig.core.stats
    assert (stats.received, stats.dropped, rig.core.pending, stats.max_pending) == (4, 2, 1, 1)
    rig.gate.set()
    assert wait_until(lambda: stats.classified == 2)
    assert [r.scores.stamp_ns for r in rig.results] == [1, 4]  # frames 2 and 3 were replaced, never classified
    assert rig.labels == ["red", "green"] and rig.core.pending == 0
    rig.core.offer(frame("blue", 5), skipped=3)  # three frames the producer knows it lost
    assert wait_until(lambda: stats.classified == 3)
    assert (stats.received, stats.dropped) == (8, 5)


def test_hot_swap_keeps_serving_when_a_model_is_refused(rig, models):
    rig.load(models["a"], 1)
    assert rig.classes[-1].names == ("red", "green", "blue")
    assert rig.classify("red", 1).scores.label == "red"
    rig.core.request_load(str(models["corrupt"]), ONNX, "test", context="mine")
    assert wait_until(lambda: rig.core.stats.load_failures == 1 and not rig.core.load_pending)
    assert [r.context for r in rig.failed] == ["mine"]  # the requester hears of it, with its own context
    assert "ModelError" in rig.core.last_load_error and str(models["corrupt"]) in rig.core.last_error
    assert rig.core.status() == "load failed; previous model serving"
    result = rig.classify("blue", 2)
    assert result.scores.label == "blue" and result.scores.model == str(models["a"])
    rig.load(models["b"], 2)
    result = rig.classify("magenta", 3)
    assert result.scores.label == "magenta" and set(result.scores.scores) == {"cyan", "magenta", "yellow"}
    assert rig.classes[-1].names == ("cyan", "magenta", "yellow")
    assert rig.core.status() == "serving" and rig.core.last_load_error == "" and rig.core.last_error == ""


def test_bad_frames_are_counted_and_the_worker_goes_on(rig, models):
    rig.load(models["a"], 1)
    bad = frame("red", 1)
    bad.encoding = "no_such_encoding"
    rig.core.offer(bad)
    assert wait_until(lambda: rig.core.stats.bad == 1)
    assert "no_such_encoding" in rig.core.last_error
    assert rig.classify("green", 2).scores.label == "green"


def test_statistics_of_classified_frames(rig, models):
    rig.load(models["a"], 1)
    for stamp in range(1, 6):
        rig.classify(("red", "green", "blue")[stamp % 3], stamp)
    stats = rig.core.stats
    assert stats.classified == 5 and stats.last_label == rig.labels[-1]
    p50, p95 = stats.latency_percentiles()
    assert 0 < p50 <= p95 < DEADLINE_S * 1000
    assert 0 < stats.inference_p50() <= p95
    line = stats.stage_percentiles()
    assert [part.split("=")[0] for part in line.split()] == list(STAGES)
    assert stats.fps() > 0  # five results within the fps window
    scores = rig.results[-1].scores
    assert set(scores.stages_ms) == set(STAGES) and scores.latency_ms >= scores.inference_ms > 0


def test_live_stats_figures_from_known_timings():
    stats = LiveStats()
    assert math.isnan(stats.latency_percentiles()[0]) and math.isnan(stats.inference_p50())
    assert stats.stage_percentiles() == "" and stats.fps() == 0.0
    for ms in range(1, 101):
        stats.record("x", float(ms), ms / 10, tuple(float(ms * (i + 1)) for i in range(len(STAGES))))
    assert stats.latency_percentiles() == pytest.approx((50.5, 95.05))
    assert stats.inference_p50() == pytest.approx(5.05)
    assert stats.stage_percentiles().split()[:2] == ["transport=50.50", "wait=101.00"]
    assert stats.classified == 100 and stats.fps() > 0


def test_backend_options_load_a_model_dir(models):
    backend, selection = ONNX.load(models["a"])
    try:
        assert selection.chosen == "onnxruntime" and backend.classes == ["red", "green", "blue"]
    finally:
        backend.close()


# -- regression and multi-label -------------------------------------------------------------------
XY_FRAMES = [((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255)), ((200, 30, 90), (20, 180, 60))]


def test_regression_publishes_the_models_point_with_the_frames_header(models):
    r = Rig(TaskConfig(xy_ema_alpha=1.0))
    try:
        r.load(models["xy"], 1)
        assert r.classes[-1].names == ("x", "y") and r.core.model.task == "regression"
        for i, (left, right) in enumerate(XY_FRAMES, start=1):
            rgb = halves(left, right)
            result = r.classify(None, i, rgb)
            assert result.scores is None and result.decision is None and result.task == "regression"
            xy = result.xy
            want = offline(models["xy"], rgb)  # the same frame through the same backend
            assert (xy.x, xy.y) == pytest.approx(tuple(want), abs=1e-4)  # alpha 1: no smoothing
            assert (xy.raw_x, xy.raw_y) == pytest.approx(tuple(want), abs=1e-6)
            assert (xy.x, xy.y) == pytest.approx(expected_xy(left, right), abs=1e-4)  # the model's known function
            assert (xy.stamp_ns, xy.frame_id, xy.model) == (i, "cam", str(models["xy"]))
            assert set(xy.stages_ms) == set(STAGES) and xy.latency_ms >= xy.inference_ms > 0
            x, y, header = r.points[-1]
            assert (x, y) == (xy.x, xy.y) and header is result.header and header.stamp.nanosec == i
        assert r.labels == [] and r.core.stats.classified == len(XY_FRAMES)
        assert r.core.stats.last_label.startswith("x=")
    finally:
        r.gate.set()
        assert r.core.stop(timeout_s=5.0)


def test_xy_ema_smooths_as_documented(models):
    r = Rig(TaskConfig(xy_ema_alpha=0.25))
    try:
        r.load(models["xy"], 1)
        frames = [halves(a, b) for a, b in XY_FRAMES]
        raws = [expected_xy(a, b) for a, b in XY_FRAMES]
        got = [r.classify(None, i, rgb).xy for i, rgb in enumerate(frames, start=1)]
        smoothed = raws[0]
        for raw, xy in zip(raws, got, strict=True):
            if raw is not raws[0]:
                smoothed = tuple(0.25 * n + 0.75 * s for n, s in zip(raw, smoothed, strict=True))
            assert (xy.raw_x, xy.raw_y) == pytest.approx(raw, abs=1e-4)
            assert (xy.x, xy.y) == pytest.approx(smoothed, abs=1e-4)
        assert got[1].x != pytest.approx(got[1].raw_x, abs=0.05)  # smoothing visibly acted
        # A new alpha takes effect at the next frame with a fresh filter: the next point is the raw one.
        r.core.task_config = TaskConfig(xy_ema_alpha=1.0)
        xy = r.classify(None, 10, frames[0]).xy
        assert (xy.x, xy.y) == pytest.approx(raws[0], abs=1e-4)
    finally:
        r.gate.set()
        assert r.core.stop(timeout_s=5.0)


def test_multilabel_active_sets_and_thresholds(models):
    r = Rig(TaskConfig(label_thresholds={"red": 0.9}))
    try:
        r.load(models["ml"], 1)
        assert r.classes[-1].names == ("red", "green", "blue")
        # Thresholds: red 0.9 (the override), green 0.5 (the default), blue 0.3 (the model's own).
        # Grey 122 scores ~0.40 on every label, grey 140 ~0.70, grey 200 ~0.99.
        cases = [
            ((255, 255, 0), ("red", "green")),
            ((0, 0, 0), ()),
            ((122, 122, 122), ("blue",)),
            ((140, 140, 140), ("green", "blue")),
            ((200, 200, 200), ("red", "green", "blue")),
            ((200, 200, 200), ("red", "green", "blue")),
        ]
        for i, (rgb, active) in enumerate(cases, start=1):
            result = r.classify(rgb, i)
            ls = result.label_set
            assert result.scores is None and result.xy is None and result.task == "multilabel"
            assert ls.thresholds == {"red": 0.9, "green": 0.5, "blue": 0.3}
            assert ls.scores == pytest.approx(expected_label_scores(rgb), abs=1e-4)
            raw = offline(models["ml"], solid(rgb))  # logits through the same backend
            assert [ls.scores[k] for k in ("red", "green", "blue")] == pytest.approx(1 / (1 + np.exp(-raw)), abs=1e-5)
            assert ls.labels == active and r.label_sets[-1] == active, (rgb, ls.scores)
            assert ls.changed == (i < len(cases))  # the last frame repeats the set before it
            assert (ls.stamp_ns, ls.frame_id, ls.model) == (i, "cam", str(models["ml"]))
        assert r.labels == [] and r.points == []
        # Without the override the model's thresholds serve: red at 0.5.
        r.core.task_config = TaskConfig()
        ls = r.classify((140, 140, 140), 20).label_set
        assert ls.thresholds["red"] == 0.5 and ls.labels == ("red", "green", "blue")
    finally:
        r.gate.set()
        assert r.core.stop(timeout_s=5.0)


def test_hot_swap_between_tasks(rig, models):
    rig.load(models["a"], 1)
    assert rig.classify("red", 1).scores.label == "red"
    rig.load(models["xy"], 2)
    assert rig.classes[-1].names == ("x", "y")
    result = rig.classify(None, 2, halves((255, 255, 255), (0, 0, 0)))
    assert (result.xy.raw_x, result.xy.raw_y) == pytest.approx(expected_xy((255, 255, 255), (0, 0, 0)), abs=1e-4)
    rig.load(models["ml"], 3)
    assert rig.classes[-1].names == ("red", "green", "blue")
    assert rig.classify((255, 0, 255), 3).label_set.labels == ("red", "blue")
    rig.load(models["b"], 4)
    result = rig.classify("yellow", 4)
    assert result.scores.label == "yellow" and sum(result.scores.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert [stamp_of(r) for r in rig.results] == [1, 2, 3, 4] and rig.core.stats.errors == 0
    assert rig.labels == ["red", "yellow"] and len(rig.points) == 1 and rig.label_sets == [("red", "blue")]


def test_garbage_frames_and_outputs_of_the_other_tasks_are_counted(rig, models, tmp_path):
    rig.load(models["xy"], 1)
    bad = frame("red", 1)
    bad.encoding = "no_such_encoding"
    rig.core.offer(bad)
    assert wait_until(lambda: rig.core.stats.bad == 1)
    assert rig.classify("green", 2).xy is not None
    # A model whose outputs turn non-finite on some frames: counted as errors, the EMA is not poisoned.
    nan_dir = build_xy_model_dir(tmp_path / "nan", offset=(float("inf"), 0.0))
    rig.load(nan_dir, 2)
    rig.core.offer(frame("red", 3))
    assert wait_until(lambda: rig.core.stats.errors == 1), rig.core.last_error
    assert "not finite" in rig.core.last_error
    rig.load(models["xy"], 3)
    assert rig.classify("blue", 4).xy.x == pytest.approx(expected_xy((0, 0, 255), (0, 0, 255))[0], abs=1e-4)


def test_threshold_overrides_for_labels_a_model_lacks_are_ignored_and_logged(models):
    logged: list[tuple[str, str]] = []
    labels: list[tuple[str, ...]] = []
    core = LiveClassifier(
        DecisionConfig(),
        Outputs(labels=labels.append),
        log=lambda level, text, throttle_s=0.0: logged.append((level, text)),
        task_config=TaskConfig(label_thresholds={"cup": 0.4, "green": 0.95}),
    )
    core.start()
    try:
        core.request_load(str(models["ml"]), ONNX, "test")
        assert wait_until(lambda: core.model is not None), core.last_error
        core.offer(frame((140, 140, 140), 1))  # every label scores ~0.70
        assert wait_until(lambda: len(labels) == 1), core.last_error
        assert labels == [("red", "blue")]  # green's override (0.95) applies, cup's is left out
        warnings = [text for level, text in logged if level == "warning"]
        assert any("'cup'" in text and "ignored" in text for text in warnings), logged
    finally:
        assert core.stop(timeout_s=5.0)


def test_task_parameters_are_checked():
    from dli_perception.core.task_heads import parse_label_thresholds
    from dli_perception.errors import ConfigError

    assert parse_label_thresholds(" cup=0.4, ball = 0.6 ,") == {"cup": 0.4, "ball": 0.6}
    assert parse_label_thresholds("") == {}
    for text, named in [("cup=1.0", "cup"), ("cup=0", "cup"), ("ball=abc", "ball"), ("cup=nan", "cup")]:
        with pytest.raises(ConfigError, match=repr(named)):
            parse_label_thresholds(text)
    for text in ("cup", "=0.4", "cup=0.4,cup=0.5"):
        with pytest.raises(ConfigError):
            parse_label_thresholds(text)
    for alpha in (0.0, 1.5, -0.1, True):
        with pytest.raises(ConfigError, match="xy_ema_alpha"):
            TaskConfig(xy_ema_alpha=alpha)


@pytest.mark.slow
def test_a_regression_resnet_is_served_alike_by_onnxruntime_and_torch(tmp_path):
    """A random-init ResNet-18 with a 2-output head, exported by core/export.py and marked regression:
    both backends hand the live classifier the network's raw outputs (no softmax), equal offline."""
    import torch

    from dli_perception.core.export import export_model_dir
    from dli_perception.core.modeldir import load_metadata, write_metadata_files
    from dli_perception.core.preprocess import PreprocessConfig
    from dli_perception.core.training import build_model

    torch.manual_seed(0)
    net, _ = build_model("resnet18", num_classes=2, weights="none")
    model_dir = export_model_dir(
        net,
        tmp_path / "resnet_xy",
        classes=["x", "y"],
        preprocess=PreprocessConfig(size=32),
        backbone="resnet18",
        variants=(),
        report=False,
        exporter="torchscript",
    )
    meta = load_metadata(model_dir)
    meta.task = "regression"
    write_metadata_files(model_dir, meta)
    rgb = halves((250, 40, 10), (10, 90, 240), 48, 64)
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(preprocess_batch([rgb], meta.preprocess))).numpy()[0]
    served = {}
    for name in ("onnxruntime", "torch"):
        options = BackendOptions(backend=name, device="cpu", threads=1)
        r = Rig(TaskConfig(xy_ema_alpha=1.0))
        try:
            r.core.request_load(str(model_dir), options, "test")
            assert wait_until(lambda r=r: len(r.classes) == 1, 60.0), r.core.last_error
            assert r.core.model.selection.chosen == name
            xy = r.classify(None, 1, rgb).xy
            served[name] = (xy.x, xy.y)
        finally:
            r.gate.set()
            assert r.core.stop(timeout_s=5.0)
        assert served[name] == pytest.approx(tuple(want), abs=1e-4), name  # the network's outputs, no softmax
