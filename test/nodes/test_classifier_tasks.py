"""classifier_node serving regression and multi-label models in a real ROS graph.

The models are tiny ONNX graphs whose outputs are known functions of the frame
(test/fixtures_models.py): a regression model giving the mean of the left and right halves of the
frame, a multi-label model whose labels are the colour channels. Every served value is compared
with the same frame run offline through the same backend (onnxruntime, core only, no node) and
with the value the model's function gives, and every point with the header of the image it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from classifier_rig import RESULT_S, ClassifierRig, frame_msg
from fixtures_models import (
    build_colour_model_dir,
    build_multilabel_model_dir,
    build_xy_model_dir,
    expected_label_scores,
    expected_xy,
    halves,
    solid,
)
from geometry_msgs.msg import PointStamped
from graphutil import DEADLINE_S, Collector, Spinner, wait_for
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dli_perception.core.backend_options import BackendOptions
from dli_perception.core.contracts import LabelSet, XYResult, stamp_ns_of
from dli_perception.core.imaging import to_rgb8
from dli_perception.core.overlay import xy_pixel
from dli_perception.core.preprocess import preprocess_batch
from dli_perception.nodes.qos import EVENTS, SENSOR_DATA

pytestmark = pytest.mark.graph

ONNX = BackendOptions(backend="onnxruntime", device="cpu", threads=1)
LABELS = ("red", "green", "blue")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task_models")
    return {
        "xy": build_xy_model_dir(root / "xy"),
        "ml": build_multilabel_model_dir(root / "ml", LABELS, thresholds={"blue": 0.3}),
        "colour": build_colour_model_dir(root / "colour", ("cyan", "magenta", "yellow")),
    }


def offline(model_dir: Path, msg: Image) -> np.ndarray:
    """The raw outputs for the frame in ``msg`` through the same backend, without any node."""
    backend, _ = ONNX.load(model_dir)
    try:
        return backend.infer(preprocess_batch([to_rgb8(msg)], backend.metadata.preprocess))[0]
    finally:
        backend.close()


class TaskRig(ClassifierRig):
    """ClassifierRig plus collectors for the regression and multi-label plain topics (points and label texts)."""

    def __init__(self, context, spinner: Spinner, **params) -> None:
        super().__init__(context, spinner, **params)
        self.points = spinner.add(Collector(context, PointStamped, "xy", EVENTS, name="points"))
        self.label_texts = spinner.add(Collector(context, String, "labels", EVENTS, name="label_texts"))

    def task_ready(self) -> None:
        node, tasks = self.node, self.node.tasks
        assert wait_for(
            lambda: (
                node.model is not None
                and self.image_pub.get_subscription_count() > 0
                and self.model_pub.get_subscription_count() > 0
                and all(
                    pub.get_subscription_count() > 0
                    for pub in (tasks.xy_pub, tasks.xy_result_pub, tasks.labels_pub, tasks.label_set_pub)
                )
                and node.label_pub.get_subscription_count() > 0
            ),
            DEADLINE_S,
        ), f"classifier not ready: status {node.status()!r}, last error {node.last_error!r}"

    def point_for(self, msg: Image) -> tuple[PointStamped, XYResult]:
        """Publish ``msg`` and wait for its point on ``xy`` and its ``~/xy_result``."""
        stamp = stamp_ns_of(msg.header)
        self.image_pub.publish(msg)

        def found():
            point = next((p for p in list(self.points.msgs) if stamp_ns_of(p.header) == stamp), None)
            result = next((r for r in self.client.history("xy_result") if r.stamp_ns == stamp), None)
            return point, result

        assert wait_for(lambda: None not in found(), RESULT_S), (
            f"no point for frame {stamp}: {self.node.status()}, last error {self.node.last_error!r}"
        )
        return found()

    def label_set_for(self, msg: Image) -> LabelSet:
        stamp = stamp_ns_of(msg.header)
        self.image_pub.publish(msg)

        def found():
            return next((r for r in self.client.history("label_set") if r.stamp_ns == stamp), None)

        assert wait_for(lambda: found() is not None, RESULT_S), (
            f"no label set for frame {stamp}: {self.node.status()}, last error {self.node.last_error!r}"
        )
        return found()


@pytest.fixture
def graph(ros_context):
    with Spinner(ros_context) as spinner:
        yield lambda **kw: TaskRig(ros_context, spinner, **kw)


# -- regression -----------------------------------------------------------------------------------
XY_FRAMES = [  # (left colour, right colour, encoding, frame size (h, w))
    ((255, 255, 255), (0, 0, 0), "rgb8", (64, 64)),
    ((0, 0, 0), (255, 255, 255), "bgr8", (48, 96)),
    ((200, 30, 90), (20, 180, 60), "rgba8", (32, 64)),
    ((90, 90, 90), (250, 10, 10), "rgb8", (120, 160)),
]


def test_regression_points_carry_the_source_header_and_the_offline_prediction(graph, models):
    g = graph(model_dir=str(models["xy"]), xy_ema_alpha=1.0)
    g.task_ready()
    assert wait_for(lambda: g.current_classes() == ["x", "y"], DEADLINE_S)
    for i, (left, right, encoding, (h, w)) in enumerate(XY_FRAMES):
        msg = frame_msg(halves(left, right, h, w), 1_700_000_000_123_456_789 + i * 40_000_017, f"cam_{i}", encoding)
        point, result = g.point_for(msg)
        assert point.header.stamp.sec == msg.header.stamp.sec
        assert point.header.stamp.nanosec == msg.header.stamp.nanosec
        assert point.header.frame_id == msg.header.frame_id == f"cam_{i}"
        want = offline(models["xy"], msg)
        assert (point.point.x, point.point.y) == pytest.approx(tuple(want), abs=1e-4)
        assert (point.point.x, point.point.y) == pytest.approx(expected_xy(left, right), abs=1e-3)
        assert point.point.z == 0.0
        assert (result.x, result.y) == (point.point.x, point.point.y)
        assert (result.raw_x, result.raw_y) == pytest.approx(tuple(want), abs=1e-4)
        assert (result.stamp_ns, result.frame_id, result.model) == (
            stamp_ns_of(msg.header),
            f"cam_{i}",
            str(models["xy"]),
        )
        assert result.latency_ms >= result.inference_ms >= 0.0 and "inference" in result.stages_ms
    # A regression model publishes nothing on the classification and multi-label topics.
    assert not g.labels() and not g.results() and g.label_texts.count() == 0
    assert not g.client.history("label_set")
    assert g.node.classified == len(XY_FRAMES) and g.node.bad == 0
    assert wait_for(lambda: g.diag("frames_classified") == str(len(XY_FRAMES)), DEADLINE_S)
    diag = g.health().values
    assert diag["task"] == "regression" and diag["classes"] == "x,y" and diag["status"] == "serving"
    assert float(diag["latency_p50_ms"]) > 0.0 and "inference=" in diag["stages_p50_ms"]


def test_xy_ema_alpha_smooths_and_bad_values_are_refused(graph, models):
    g = graph(model_dir=str(models["xy"]), xy_ema_alpha=1.0)
    g.task_ready()
    for bad in (0.0, 1.5, -0.2):
        result = g.node.set_parameters([Parameter("xy_ema_alpha", value=bad)])[0]
        assert not result.successful, bad
    assert g.node.set_parameters([Parameter("xy_ema_alpha", value=0.25)])[0].successful
    frames = [((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255)), ((0, 0, 0), (255, 255, 255))]
    smoothed = None
    for i, (left, right) in enumerate(frames, start=1):
        msg = frame_msg(halves(left, right), 5_000 + i)
        raw = expected_xy(left, right)
        smoothed = raw if smoothed is None else tuple(0.25 * r + 0.75 * s for r, s in zip(raw, smoothed, strict=True))
        point, result = g.point_for(msg)
        assert (result.raw_x, result.raw_y) == pytest.approx(raw, abs=1e-4)
        assert (point.point.x, point.point.y) == pytest.approx(smoothed, abs=1e-4), i
    assert abs(point.point.x - result.raw_x) > 0.3  # the smoothing acted (the target jumped by ~1.8)


def test_regression_overlay_marks_the_point(graph, models, ros_context):
    g = graph(model_dir=str(models["xy"]), xy_ema_alpha=1.0)
    g.task_ready()
    overlays = g.spinner.add(Collector(ros_context, Image, "/classifier_node/overlay", SENSOR_DATA, name="overlays"))
    assert wait_for(lambda: g.node.overlay_pub.get_subscription_count() > 0, DEADLINE_S)
    msg = frame_msg(halves((0, 0, 0), (255, 255, 255), 120, 160), 77, "overlay_cam")
    point, _ = g.point_for(msg)
    assert wait_for(lambda: overlays.count() >= 1, DEADLINE_S)
    out = overlays.msgs[-1]
    assert out.header.frame_id == "overlay_cam" and (out.width, out.height) == (160, 120)
    pixels = np.frombuffer(bytes(out.data), np.uint8).reshape(120, 160, 3)
    cx, cy = xy_pixel(point.point.x, point.point.y, 120, 160)
    green = np.all(pixels == (40, 200, 80), axis=-1)  # the crosshair's colour (OverlayStyle.known_colour)
    near = green[max(0, cy - 12) : cy + 13, max(0, cx - 12) : cx + 13]
    assert near.sum() >= 10 and green.sum() == pytest.approx(near.sum(), abs=4)  # drawn there, nowhere else


def test_garbage_frames_are_counted_and_the_node_keeps_publishing_points(graph, models):
    g = graph(model_dir=str(models["xy"]), xy_ema_alpha=1.0)
    g.task_ready()
    unknown = frame_msg(solid("red", 4, 4), 101)
    unknown.encoding = "not_an_encoding"
    truncated = frame_msg(solid("red", 8, 8), 102)
    truncated.data = bytes(truncated.data)[:100]
    for n, bad in enumerate((unknown, truncated), start=1):
        g.image_pub.publish(bad)
        assert wait_for(lambda n=n: g.node.bad == n, DEADLINE_S)
        msg = frame_msg(halves((255, 255, 255), (0, 0, 0)), 1000 + n)
        point, _ = g.point_for(msg)
        assert (point.point.x, point.point.y) == pytest.approx(expected_xy((255, 255, 255), (0, 0, 0)), abs=1e-4)
    assert g.node.errors == 0 and g.node.classified == 2 and g.points.count() == 2
    assert wait_for(lambda: g.diag("frames_bad") == "2", DEADLINE_S)


# -- multi-label ----------------------------------------------------------------------------------
ML_FRAMES = [  # colour, active labels with thresholds red 0.9 (override), green 0.5 (default), blue 0.3 (model)
    ((255, 255, 0), ("red", "green")),
    ((0, 0, 0), ()),
    ((122, 122, 122), ("blue",)),  # every label scores ~0.40
    ((140, 140, 140), ("green", "blue")),  # ~0.70
    ((140, 140, 140), ("green", "blue")),
    ((200, 200, 200), ("red", "green", "blue")),  # ~0.99
]


def test_multilabel_active_labels_scores_and_thresholds(graph, models):
    g = graph(model_dir=str(models["ml"]), label_thresholds="red=0.9")
    g.task_ready()
    assert wait_for(lambda: g.current_classes() == list(LABELS), DEADLINE_S)
    previous = None
    for i, (rgb, active) in enumerate(ML_FRAMES):
        msg = frame_msg(solid(rgb), 9_000_000_000 + i, f"ml_{i}")
        result = g.label_set_for(msg)
        assert result.labels == active, (rgb, result.scores)
        assert result.thresholds == {"red": 0.9, "green": 0.5, "blue": 0.3}
        assert result.scores == pytest.approx(expected_label_scores(rgb), abs=1e-4)
        logits = offline(models["ml"], msg)
        assert [result.scores[k] for k in LABELS] == pytest.approx(1 / (1 + np.exp(-logits)), abs=1e-5)
        assert result.changed == (active != previous) and result.frame_id == f"ml_{i}"
        assert result.stamp_ns == stamp_ns_of(msg.header)
        previous = active
    assert wait_for(lambda: g.label_texts.count() == len(ML_FRAMES), DEADLINE_S)
    assert [m.data for m in g.label_texts.msgs] == [",".join(a) for _, a in ML_FRAMES]
    assert not g.labels() and not g.results() and g.points.count() == 0
    assert wait_for(lambda: g.diag("task") == "multilabel", DEADLINE_S)


def test_label_thresholds_are_checked(graph, models, ros_context):
    from rclpy.exceptions import InvalidParameterValueException

    from dli_perception.nodes.classifier_node import ClassifierNode

    g = graph(model_dir=str(models["ml"]))
    g.task_ready()
    refusals = {
        "red=1.5": "'red'",
        "green=abc": "'green'",
        "blue=0": "'blue'",
        "cup=0.4": "'cup'",  # not a label of the serving model
        "red": "label=threshold",
    }
    for text, named in refusals.items():
        result = g.node.set_parameters([Parameter("label_thresholds", value=text)])[0]
        assert not result.successful and named in result.reason, (text, result.reason)
    assert g.node.set_parameters([Parameter("label_thresholds", value="green=0.8")])[0].successful
    result = g.label_set_for(frame_msg(solid((140, 140, 140)), 42))
    assert result.thresholds["green"] == 0.8 and result.labels == ("red", "blue")
    with pytest.raises(InvalidParameterValueException):
        ClassifierNode(context=ros_context, parameter_overrides=[Parameter("label_thresholds", value="red=2")])


# -- hot swap between tasks -----------------------------------------------------------------------
def test_hot_swap_between_models_of_different_tasks(graph, models, capfd):
    g = graph(model_dir=str(models["colour"]), smoothing="none", xy_ema_alpha=1.0)
    g.task_ready()
    assert g.classify(solid("magenta"), 1).label == "magenta"

    g.model_pub.publish(String(data=str(models["xy"])))
    assert wait_for(lambda: g.current_classes() == ["x", "y"], DEADLINE_S), g.node.last_error
    point, _ = g.point_for(frame_msg(halves((255, 255, 255), (0, 0, 0)), 2))
    assert (point.point.x, point.point.y) == pytest.approx(expected_xy((255, 255, 255), (0, 0, 0)), abs=1e-4)

    g.model_pub.publish(String(data=str(models["ml"])))
    assert wait_for(lambda: g.current_classes() == list(LABELS), DEADLINE_S), g.node.last_error
    assert g.label_set_for(frame_msg(solid((255, 0, 255)), 3)).labels == ("red", "blue")

    g.model_pub.publish(String(data=str(models["colour"])))
    assert wait_for(lambda: g.current_classes() == ["cyan", "magenta", "yellow"], DEADLINE_S), g.node.last_error
    assert g.classify(solid("yellow"), 4).label == "yellow"
    assert g.node.errors == 0 and g.node.loads == 4
    # the plain-text topics are separate from the results waited for above: wait for them too
    assert wait_for(lambda: g.labels() == ["magenta", "yellow"], DEADLINE_S), g.labels()
    assert wait_for(lambda: [m.data for m in g.label_texts.msgs] == ["red,blue"], DEADLINE_S)
    assert g.points.count() == 1

    # The node's log lines, read from its console output: /rosout is routed by logger name, and in this
    # one test process earlier tests' nodes of the same name can take that route over as they are destroyed.
    console: list[str] = []

    def logged(text: str) -> bool:
        console.append(capfd.readouterr().err)
        return any(text in line for line in "".join(console).splitlines() if "[classifier_node]" in line)

    assert wait_for(
        lambda: (
            logged("(regression; was")
            and logged("classification: the outputs change task")
            and logged("(multilabel; was")
            and logged("regression: the outputs change task")
        ),
        DEADLINE_S,
    ), "".join(console)[-2000:]
    assert wait_for(lambda: g.diag("task") == "classification", DEADLINE_S)
    assert g.current_classes() == ["cyan", "magenta", "yellow"]


# -- the graph client -----------------------------------------------------------------------------
def test_graph_client_reads_points_xy_results_and_label_sets(graph, models, ros_context):
    from dli_perception.graph_client import Teacher

    g = graph(model_dir=str(models["xy"]), xy_ema_alpha=1.0)
    g.task_ready()
    teacher = Teacher(node_name="task_watcher", context=ros_context)
    try:
        heard: list[tuple[float, float, int, str]] = []
        teacher.watch_xy(lambda *point: heard.append(point))
        assert wait_for(
            lambda: all(pub.get_subscription_count() > 1 for pub in (g.node.tasks.xy_pub, g.node.tasks.xy_result_pub)),
            DEADLINE_S,
        )
        msg = frame_msg(halves((255, 255, 255), (0, 0, 0)), 3_000_000_042, "client_cam")
        g.point_for(msg)
        assert wait_for(lambda: heard and teacher.xy_result() is not None, DEADLINE_S)
        want = expected_xy((255, 255, 255), (0, 0, 0))
        x, y, stamp, frame_id = heard[-1]
        assert (x, y) == pytest.approx(want, abs=1e-4) and (stamp, frame_id) == (3_000_000_042, "client_cam")
        xy = teacher.xy_result()
        assert (xy.x, xy.y) == (x, y) and xy.stamp_ns == stamp and xy.model == str(models["xy"])
        assert teacher.wait_for_model(str(models["xy"]), timeout_s=DEADLINE_S).ok
        assert teacher.label_set() is None and teacher.scores() is None

        g.model_pub.publish(String(data=str(models["ml"])))
        assert wait_for(lambda: g.current_classes() == list(LABELS), DEADLINE_S), g.node.last_error
        g.label_set_for(frame_msg(solid((255, 255, 0)), 3_000_000_043))
        assert teacher.wait_for_model(str(models["ml"]), timeout_s=DEADLINE_S).ok, teacher.last_error
        label_set = teacher.label_set()
        assert label_set.labels == ("red", "green") and label_set.stamp_ns == 3_000_000_043
        assert teacher.served_result() is label_set
    finally:
        teacher.close()


# -- as a process, as a robot runs it --------------------------------------------------------------
def test_process_serves_stamped_points_and_stops_cleanly(node_process, ros_context, models):
    """The console script with a regression model: each fresh frame's point carries that frame's header and
    the offline prediction (xy_ema_alpha 1); SIGINT ends it with exit code 0 and no traceback."""
    from graphutil import stop_and_check
    from rclpy.node import Node

    proc = node_process(
        "classifier_node", "-p", f"model_dir:={models['xy']}", "-p", "backend:=onnxruntime", "-p", "xy_ema_alpha:=1.0"
    )
    source = Node("frame_source", context=ros_context)
    pub = source.create_publisher(Image, "image_raw", SENSOR_DATA)
    points = Collector(ros_context, PointStamped, "xy", EVENTS, name="points")
    with Spinner(ros_context, source, points):
        assert wait_for(lambda: pub.get_subscription_count() > 0 or proc.proc.poll() is not None, 40.0), proc.output()
        rng = np.random.default_rng(7)
        for i in range(5):
            msg = frame_msg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), 1_800_000_000_000_000_000 + i, f"p{i}")
            want = offline(models["xy"], msg)

            def arrived(msg=msg) -> bool:  # publish until the node, still starting, takes this frame
                if not any(stamp_ns_of(p.header) == stamp_ns_of(msg.header) for p in list(points.msgs)):
                    pub.publish(msg)
                    return False
                return True

            assert wait_for(arrived, 30.0, interval=0.25), proc.output()
            point = next(p for p in list(points.msgs) if stamp_ns_of(p.header) == stamp_ns_of(msg.header))
            assert point.header.frame_id == f"p{i}"
            assert (point.point.x, point.point.y) == pytest.approx(tuple(want), abs=1e-4)
        rc = stop_and_check(proc, "int")
    assert rc == 0, proc.output()
    assert "Traceback" not in proc.stderr(), proc.stderr()
    assert "regression" in proc.output()
