"""LiveClassifier without ROS: the newest-frame slot, hot swap over a refused model, statistics.

Real models (the tiny nearest-colour ONNX graphs of ``fixtures_models``) on real onnxruntime,
real worker and loader threads; frames are rosbags ``sensor_msgs/Image`` messages.
"""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import pytest
from fixtures_models import build_colour_model_dir, corrupt_copy, solid

from dli_perception.core.backend_options import BackendOptions
from dli_perception.core.contracts import ClassList
from dli_perception.core.decision import DecisionConfig
from dli_perception.core.imaging.bagmessages import to_rosbags_image
from dli_perception.core.live_classifier import LiveClassifier, LiveResult, LoadRequest, Outputs
from dli_perception.core.live_stats import STAGES, LiveStats

DEADLINE_S = 15.0
ONNX = BackendOptions(backend="onnxruntime", device="cpu", threads=1)


def wait_until(predicate, timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def frame(colour: str, stamp_ns: int):
    header = SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="cam")
    return to_rosbags_image(solid(colour), "rgb8", header=header)


class Rig:
    """A started LiveClassifier collecting what it outputs; ``gate`` can hold the worker inside a result."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.results: list[LiveResult] = []
        self.classes: list[ClassList] = []
        self.failed: list[LoadRequest] = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_result = threading.Event()
        outputs = Outputs(label=self.labels.append, result=self._result, classes=self.classes.append)
        self.core = LiveClassifier(DecisionConfig(smoothing="none"), outputs, on_load_failed=self.failed.append)
        self.core.start()

    def _result(self, result: LiveResult) -> None:
        self.results.append(result)
        self.in_result.set()
        assert self.gate.wait(DEADLINE_S)

    def load(self, model_dir, loads: int) -> None:
        self.core.request_load(str(model_dir), ONNX, "test")
        core = self.core
        assert wait_until(lambda: core.stats.loads == loads and len(self.classes) == loads), core.last_error

    def classify(self, colour: str, stamp_ns: int) -> LiveResult:
        self.core.offer(frame(colour, stamp_ns))
        assert wait_until(lambda: any(r.scores.stamp_ns == stamp_ns for r in self.results)), self.core.last_error
        return next(r for r in self.results if r.scores.stamp_ns == stamp_ns)


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
    return {"a": a, "b": b, "corrupt": corrupt_copy(a, root / "corrupt")}


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
