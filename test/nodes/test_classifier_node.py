"""classifier_node in a real ROS graph: labels, stamps, bad frames, hot reload, overload, signals, camera -> label.

In-process tests run the node with a nearest-colour model (test/fixtures_models.py) in a
private context next to a frame publisher and the package's graph client, which reads the results;
process tests run the console scripts. Frames are published one at a time and each result awaited
(with a deadline) where the test needs every frame classified. Parameters are set through the node's
parameter services (the raw ROS interface, as ``ros2 param`` does) and the overlay is read as the raw
Image it is.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from classifier_rig import ClassifierRig, frame_msg
from fixtures_models import build_colour_model_dir, corrupt_copy, solid
from graphutil import (
    Collector,
    FrameSource,
    Spinner,
    graph_client,
    ros_args,
    scene_camera_args,
    stop_and_check,
    wait_for,
)
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from sensor_msgs.msg import Image

from dli_perception.core.backend_options import BackendOptions
from dli_perception.nodes.classifier_node import PARAMS, ClassifierNode
from dli_perception.nodes.qos import SENSOR_DATA

pytestmark = pytest.mark.graph

CLASSES_A = ["red", "green", "blue"]
CLASSES_B = ["cyan", "magenta", "yellow"]
DEADLINE = 15.0


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classifier_models")
    a = build_colour_model_dir(root / "a", CLASSES_A)
    b = build_colour_model_dir(root / "b", CLASSES_B)
    return {"a": a, "b": b, "corrupt": corrupt_copy(b, root / "corrupt"), "missing": root / "does_not_exist"}


class ParamClient:
    """Sets and reads a node's parameters through its parameter services, as ``ros2 param`` does."""

    def __init__(self, node: Node, target: str) -> None:
        self._set = node.create_client(SetParameters, f"{target}/set_parameters")
        self._get = node.create_client(GetParameters, f"{target}/get_parameters")

    def _call(self, client, request):
        assert client.wait_for_service(timeout_sec=DEADLINE), f"{client.srv_name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, DEADLINE), f"{client.srv_name} did not answer"
        return future.result()

    def set(self, name: str, value) -> SetParametersResult:
        msg = Parameter(name, value=value).to_parameter_msg()
        return self._call(self._set, SetParameters.Request(parameters=[msg])).results[0]

    def get(self, name: str):
        values = self._call(self._get, GetParameters.Request(names=[name])).values
        return parameter_value_to_python(values[0])


@pytest.fixture
def graph(ros_context, request):
    params = getattr(request, "param", {})
    with Spinner(ros_context) as spinner:
        yield lambda **kw: ClassifierRig(ros_context, spinner, **{**params, **kw})


# -- labels, stamps, scores ---------------------------------------------------------------------
def test_labels_scores_stamps_and_frame_ids(graph, models):
    g = graph(model_dir=str(models["a"]), smoothing="none")
    g.ready()
    assert wait_for(lambda: g.current_classes() == CLASSES_A, DEADLINE)
    frames = [
        ("red", "rgb8", (24, 32)),
        ("green", "bgr8", (48, 40)),
        ("blue", "rgba8", (17, 23)),
        ("green", "rgb8", (120, 160)),
        ("red", "bgr8", (24, 32)),
        ("blue", "rgb8", (32, 32)),
    ]
    for i, (colour, encoding, (h, w)) in enumerate(frames):
        stamp = 1_700_000_000_000_000_000 + i * 33_000_123
        result = g.classify(solid(colour, h, w), stamp, frame_id=f"cam_{i}", encoding=encoding)
        assert result.label == colour and result.raw_label == colour
        assert result.frame_id == f"cam_{i}"
        assert result.stamp_ns == stamp
        assert set(result.scores) == set(CLASSES_A)
        assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert 0.5 < result.score <= 1.0 and result.scores[colour] == pytest.approx(result.raw_score)
        assert result.model == str(models["a"])
        assert result.latency_ms >= result.inference_ms >= 0.0
    assert wait_for(lambda: len(g.labels()) == len(frames), DEADLINE)
    assert g.labels() == [c for c, _, _ in frames]
    assert g.node.classified == len(frames) and g.node.bad == 0
    assert wait_for(lambda: g.diag("frames_classified") == str(len(frames)), DEADLINE)
    diag = g.health().values
    assert diag["status"] == "serving" and diag["backend"] == "onnxruntime" and diag["device"] == "cpu"
    assert diag["model_dir"] == str(models["a"]) and diag["classes"] == ",".join(CLASSES_A)
    assert float(diag["latency_p95_ms"]) >= float(diag["latency_p50_ms"]) > 0.0
    assert g.client.bad_messages == 0, g.client.last_error


@pytest.mark.parametrize(
    ("hysteresis", "expected"),
    [(0.0, ["red", "red", "nothing", "green", "green"]), (0.2, ["red", "red", "red", "green", "green"])],
)
def test_smoothing_threshold_and_hysteresis(graph, models, hysteresis, expected):
    g = graph(
        model_dir=str(models["a"]),
        smoothing="ema",
        ema_alpha=0.5,
        threshold=0.6,
        hysteresis=hysteresis,
        unknown_label="nothing",
    )
    g.ready()
    labels = [g.classify(solid(c), 10 + i).label for i, c in enumerate(["red", "red", "green", "green", "green"])]
    # EMA 0.5: after two red frames the first green frame leaves red and green at 0.5 each: below the
    # threshold, but not below threshold - hysteresis when hysteresis is 0.2.
    assert labels == expected


def test_overlay_only_when_subscribed(graph, models, ros_context):
    g = graph(model_dir=str(models["a"]))
    g.ready()
    g.classify(solid("red"), 1)
    assert g.node.overlays == 0  # nobody subscribed: nothing drawn
    overlays = g.spinner.add(Collector(ros_context, Image, "/classifier_node/overlay", SENSOR_DATA, name="overlays"))
    assert wait_for(lambda: g.node.overlay_pub.get_subscription_count() > 0, DEADLINE)
    stamp = 2_000_000_007
    g.classify(solid("blue", 60, 80), stamp, frame_id="overlay_cam")
    assert wait_for(lambda: overlays.count() >= 1, DEADLINE)
    assert g.node.overlays == 1
    msg = overlays.msgs[-1]
    assert (msg.width, msg.height, msg.encoding) == (80, 60, "rgb8")
    assert msg.header.frame_id == "overlay_cam" and msg.header.stamp.nanosec == 7
    pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(60, 80, 3)
    assert np.all(pixels[-1] == (0, 0, 255))  # the frame below the banner
    assert np.any(pixels[0] != (0, 0, 255))  # the banner


# -- bad frames -----------------------------------------------------------------------------------
def _bad_frames() -> list[tuple[str, Image]]:
    unknown = frame_msg(solid("red", 4, 4), 101)
    unknown.encoding = "not_an_encoding"
    truncated = frame_msg(solid("red", 8, 8), 102)
    truncated.data = bytes(truncated.data)[:100]
    empty = frame_msg(solid("red", 4, 4), 103)
    empty.width, empty.height, empty.step, empty.data = 0, 0, 0, b""
    wrong_step = frame_msg(solid("red", 8, 8), 104)
    wrong_step.step = 5
    return [("unknown encoding", unknown), ("truncated", truncated), ("empty", empty), ("step", wrong_step)]


def test_bad_frames_are_counted_and_skipped(graph, models):
    g = graph(model_dir=str(models["a"]), smoothing="none")
    g.ready()
    assert g.classify(solid("green"), 1).label == "green"
    errors = []
    for n, (what, msg) in enumerate(_bad_frames(), start=1):
        g.image_pub.publish(msg)
        assert wait_for(lambda n=n: g.node.bad == n, DEADLINE), f"{what} frame not counted as bad"
        errors.append(g.node.last_error)
        assert g.classify(solid("blue"), 1000 + n).label == "blue"  # keeps classifying after it
    assert "not_an_encoding" in errors[0]
    assert g.node.errors == 0 and g.node.classified == 5
    assert wait_for(lambda: g.diag("frames_bad") == "4", DEADLINE)
    assert g.diag("last_error").startswith("bad frame")


# -- hot reload -----------------------------------------------------------------------------------
def test_hot_reload_by_topic_and_parameter(graph, models):
    g = graph(model_dir=str(models["a"]), smoothing="none")
    g.ready()
    assert wait_for(lambda: g.current_classes() == CLASSES_A, DEADLINE)
    assert g.classify(solid("red"), 1).label == "red"

    assert g.client.switch_model(str(models["b"])).ok, g.client.last_error
    assert wait_for(lambda: g.current_classes() == CLASSES_B, DEADLINE), g.node.last_error
    result = g.classify(solid("cyan"), 2)
    assert result.label == "cyan" and set(result.scores) == set(CLASSES_B)
    assert result.model == str(models["b"])
    assert g.node.get_parameter("model_dir").value == str(models["a"])  # the topic does not rewrite it

    # A corrupt model is refused; the old one keeps serving and the error is reported.
    assert g.client.switch_model(str(models["corrupt"])).ok, g.client.last_error
    assert wait_for(lambda: g.node.load_failures == 1 and not g.node.loading, DEADLINE)
    assert g.classify(solid("magenta"), 3).label == "magenta"
    assert g.node.status() == "load failed; previous model serving"
    assert wait_for(lambda: str(models["corrupt"]) in (g.diag("last_error") or ""), DEADLINE)
    diag = g.health()
    assert diag.level == "warn" and "ModelError" in diag.values["last_error"]
    assert diag.values["model_dir"] == str(models["b"])

    # A parameter change (through the node's parameter services, as `ros2 param set` does) loads in
    # the background; a successful load clears the error, in the node and in diagnostics.
    params = ParamClient(g.source, "/classifier_node")
    result = params.set("model_dir", str(models["a"]))
    assert result.successful, result.reason
    assert wait_for(lambda: g.current_classes() == CLASSES_A, DEADLINE), g.node.last_error
    assert g.classify(solid("blue"), 4).label == "blue"
    assert g.node.status() == "serving"
    assert g.node.last_error == "" and g.node.last_load_error == ""
    assert wait_for(lambda: g.diag("status") == "serving", DEADLINE)
    assert g.diag("last_error") == "" and g.health().level == "ok"

    # A missing directory is accepted as a value and fails to load; the model keeps serving and the
    # parameter is set back to the directory serving, so a parameter dump never carries the bad one.
    result = params.set("model_dir", str(models["missing"]))
    assert result.successful, result.reason
    assert wait_for(lambda: g.node.load_failures == 2 and not g.node.loading, DEADLINE)
    assert "does not exist" in g.node.last_load_error
    assert wait_for(lambda: params.get("model_dir") == str(models["a"]), DEADLINE), params.get("model_dir")
    assert g.node.get_parameter("model_dir").value == str(models["a"])
    assert g.classify(solid("green"), 5).label == "green"
    assert g.node.loads == 3  # setting it back loaded nothing again
    time.sleep(0.5)
    assert g.node.loads == 3 and not g.node.loading and g.node.status() == "load failed; previous model serving"


def test_waits_for_a_model_then_loads_one_from_the_topic(graph, models):
    g = graph()  # no model_dir
    assert wait_for(
        lambda: g.image_pub.get_subscription_count() > 0 and g.model_pub.get_subscription_count() > 0,
        DEADLINE,
    )
    assert g.node.status() == "waiting for a model"
    g.image_pub.publish(frame_msg(solid("red"), 1))
    assert wait_for(lambda: g.node.without_model == 1, DEADLINE)
    assert g.node.classified == 0
    assert g.client.switch_model(str(models["b"])).ok, g.client.last_error
    g.ready()
    assert g.classify(solid("yellow"), 2).label == "yellow"


def test_decision_parameters_are_validated_together(graph, models):
    g = graph(model_dir=str(models["a"]), smoothing="k_of_n", k=2, n=3)
    g.ready()
    assert not g.node.set_parameters([Parameter("k", value=4)])[0].successful  # k > n
    assert not g.node.set_parameters([Parameter("unknown_label", value="red")])[0].successful  # a class name
    assert not g.node.set_parameters([Parameter("ema_alpha", value=0.0)])[0].successful
    assert not g.node.set_parameters([Parameter("backend", value="tflite")])[0].successful
    assert g.node.set_parameters([Parameter("n", value=5), Parameter("k", value=4)])[0].successful
    labels = [g.classify(solid("blue"), 10 + i).label for i in range(4)]
    assert labels == ["unknown", "unknown", "unknown", "blue"]  # 4 of the last 5 votes needed


def test_refuses_contradictory_decision_overrides(ros_context, models):
    from rclpy.exceptions import InvalidParameterValueException

    with pytest.raises(InvalidParameterValueException):
        ClassifierNode(context=ros_context, parameter_overrides=[Parameter("k", value=9)])


# -- overload ------------------------------------------------------------------------------------
def test_overload_drops_stale_frames_and_never_queues(graph, models):
    g = graph(model_dir=str(models["a"]), smoothing="none", max_rate_hz=20.0)
    g.ready()
    node = g.node
    first = 5_000_000_000
    n_frames = 150
    for i in range(n_frames):  # ~200 Hz: every frame reaches the callback, the node classifies at 20 Hz
        g.image_pub.publish(frame_msg(solid(CLASSES_A[i % 3]), first + i))
        time.sleep(0.005)

    def settled() -> bool:
        accounted = node.classified + node.dropped + node.bad + node.errors + node.without_model
        return (
            node.received > 0
            and node.pending == 0
            and accounted == node.received
            and len(g.results()) == node.classified
        )

    assert wait_for(settled, DEADLINE), (node.received, node.classified, node.dropped, node.pending)
    assert node.max_pending == 1
    assert node.dropped > node.classified >= 1
    stamps = [r.stamp_ns for r in g.results()]
    assert stamps == sorted(set(stamps))  # always a newer frame, never an old one after a new one
    for r in g.results():  # every result belongs to its own frame
        assert r.label == CLASSES_A[(r.stamp_ns - first) % 3]
    # Right after the burst the next frame is classified next: no backlog is worked off.
    before = len(g.results())
    last = first + 10_000
    g.classify(solid("blue"), last)
    assert [r.stamp_ns for r in g.results()[before:]] == [last]


# -- process: signals -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_process_stops_cleanly(mode, node_process, ros_context, models):
    proc = node_process("classifier_node", "-p", f"model_dir:={models['a']}", "-p", "backend:=onnxruntime")
    source = FrameSource(ros_context)
    pub = source.image_pub
    with Spinner(ros_context, source) as spinner:
        client = spinner.own(graph_client(ros_context))
        assert wait_for(lambda: client.classes() is not None or proc.proc.poll() is not None, 40.0)
        assert client.classes() is not None, proc.output()
        assert list(client.classes().names) == CLASSES_A

        def got_result() -> bool:  # stream frames like a camera until one is classified
            pub.publish(frame_msg(solid("green"), time.time_ns()))
            return client.scores() is not None

        assert wait_for(got_result, 20.0, interval=0.1), proc.output()
        assert all(s.label == "green" for s in client.history("scores"))  # only green was sent
        for _ in range(5):  # keep the worker busy while the signal arrives
            pub.publish(frame_msg(solid("red"), time.time_ns()))
        rc = stop_and_check(proc, mode)
    assert rc == 0, proc.output()
    assert "Traceback" not in proc.stderr(), proc.stderr()
    assert "worker joined" in proc.output(), proc.output()


FORGED = "\n[FATAL] [1700000000.000000000] [classifier_node]: forged"
LOG_LINE = re.compile(r"^\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[\d+\.\d+\] \[[\w/.]+\]: ")


def test_outside_text_cannot_forge_log_lines(node_process, ros_context, models):
    """A frame's encoding and a model_updated path carrying a newline and a fake log line are written
    escaped into the node's one line: no line of the log is one the node did not write."""
    proc = node_process("classifier_node", "-p", f"model_dir:={models['a']}", "-p", "backend:=onnxruntime")
    source = FrameSource(ros_context)
    pub = source.image_pub
    with Spinner(ros_context, source) as spinner:
        client = spinner.own(graph_client(ros_context))
        assert wait_for(lambda: client.classes() is not None or proc.proc.poll() is not None, 40.0), proc.output()

        def bad_frame_logged() -> bool:
            msg = frame_msg(solid("green"), time.time_ns())
            msg.encoding = "rgb8" + FORGED
            pub.publish(msg)
            return "bad frame" in proc.output()

        assert wait_for(bad_frame_logged, 20.0, interval=0.1), proc.output()

        def load_failure_logged() -> bool:
            client.switch_model(f"{models['missing']}{FORGED}")  # again until the node logged it
            return "failed" in proc.output()

        assert wait_for(load_failure_logged, 20.0, interval=0.2), proc.output()
        assert stop_and_check(proc, "int") == 0
    lines = proc.output().splitlines()
    forged = [line for line in lines if "forged" in line]
    assert len(forged) >= 3, lines  # the bad frame, the load and its failure were all logged ...
    for line in forged:  # ... each on one line of its own, the fake one escaped inside it
        assert LOG_LINE.match(line) and not line.startswith("[FATAL] [1700000000"), line
        assert "\\n[FATAL] [1700000000" in line, line
    assert not [line for line in lines if line.startswith("[FATAL]")], lines


# -- camera -> classifier across processes, with a model trained here ------------------------------
CAMERA_CLASSES = ["free", "blocked"]
SCENE_PERIOD_S = 1.5


@pytest.fixture(scope="module")
def trained_model(trained_scene_model) -> Path:
    """A ResNet-18 head trained on synthetic free/blocked scenes (test/conftest.py)."""
    return trained_scene_model


def best_schedule_agreement(stamps_s: list[float], labels: list[str]) -> float:
    """Fraction of labels matching the camera's scene schedule at the best-fitting (unknown) start time.

    The synthetic camera shows CAMERA_CLASSES[floor((t - start) / period) % n]; start is when
    the camera process opened its source, so it is fitted (one parameter, 10 ms grid).
    """
    cycle = SCENE_PERIOD_S * len(CAMERA_CLASSES)
    t0 = min(stamps_s)
    best = 0.0
    for start in np.arange(t0 - cycle, t0, 0.01):
        expected = [CAMERA_CLASSES[math.floor((t - start) / SCENE_PERIOD_S) % len(CAMERA_CLASSES)] for t in stamps_s]
        best = max(best, float(np.mean([e == lab for e, lab in zip(expected, labels, strict=True)])))
    return best


@pytest.mark.slow
def test_camera_to_classifier_across_processes(node_process, ros_context, trained_model):
    camera = node_process(
        "camera_node", *scene_camera_args(SCENE_PERIOD_S, {"source": "synthetic", "synthetic.seed": 11})
    )
    classifier = node_process("classifier_node", *ros_args(model_dir=trained_model, smoothing="none", threads=1))
    with graph_client(ros_context) as client:
        # Three full scene cycles of results.
        def enough() -> bool:
            stamps = [s.stamp_ns for s in client.history("scores")]
            return len(stamps) > 10 and (max(stamps) - min(stamps)) / 1e9 >= 3 * 2 * SCENE_PERIOD_S

        ok = wait_for(enough, 90.0, interval=0.2)
        count = len(client.history("scores"))
        assert ok, f"{count} results\n--- camera:\n{camera.output()}\n--- classifier:\n{classifier.output()}"
        results = client.history("scores")
    for proc in (classifier, camera):
        assert stop_and_check(proc, "int") == 0, proc.output()
        assert "Traceback" not in proc.stderr()
    stamps = [r.stamp_ns / 1e9 for r in results]
    raw = [r.raw_label for r in results]
    assert {"free", "blocked"} <= set(raw)
    assert all(r.frame_id == "camera" for r in results)
    agreement = best_schedule_agreement(stamps, raw)
    assert agreement >= 0.85, (agreement, list(zip(stamps, raw, strict=True)))


def test_schedule_fit_rejects_labels_that_ignore_the_scenes():
    stamps = [100.0 + 0.1 * i for i in range(90)]
    truth = [CAMERA_CLASSES[math.floor((t - 99.37) / SCENE_PERIOD_S) % 2] for t in stamps]
    assert best_schedule_agreement(stamps, truth) == 1.0
    rng = np.random.default_rng(0)
    assert best_schedule_agreement(stamps, list(rng.choice(CAMERA_CLASSES, len(stamps)))) < 0.75
    assert best_schedule_agreement(stamps, ["free"] * len(stamps)) < 0.6


# -- pure helpers --------------------------------------------------------------------------------
def test_backend_options_go_only_to_backends_that_know_them():
    from dli_perception.core.backends.select import backend_class

    ort = BackendOptions("onnxruntime", device="cpu", threads=2, engine_cache_dir="/tmp/e").kwargs()
    assert ort["device"] == "cpu" and ort["intra_op_threads"] == 2 and ort["trt_cache_dir"] == "/tmp/e"
    assert "cache_dir" not in ort  # TensorRT's own option
    assert set(ort) <= set(backend_class("onnxruntime").OPTIONS)
    assert BackendOptions("torch", threads=2, engine_cache_dir="/tmp/e", calibration_dir="/d").kwargs() == {
        "device": "auto"
    }
    auto = BackendOptions(
        "auto", device="cuda", precision="int8", engine_cache_dir="/tmp/e", calibration_dir="/d"
    ).kwargs()
    assert auto["cache_dir"] == auto["trt_cache_dir"] == "/tmp/e" and auto["calibration_dir"] == "/d"
    assert auto["precision"] == "int8" and "intra_op_threads" not in auto  # threads 0: library default


def test_params_table_is_described():
    for p in PARAMS:
        assert p.description.endswith(".") and p.validate(p.default) is None, p.name
