"""recorder_node for regression and multi-label datasets, over real topics and services in one process.

Targets arrive on ``teach_xy`` (PointStamped) and ``teach_labels`` (String), or through the node's
own ``set_parameters`` service (``target_xy``, ``target_labels``); the manifest on disk must hold
the target current at each capture, and every bad target must be refused with its reason, counted
in the diagnostics, and leave the dataset and the current target as they were.
"""

from __future__ import annotations

import math

import pytest
from geometry_msgs.msg import PointStamped
from graphutil import DEADLINE_S, DISCOVERY_S, FrameSource, Spinner, graph_client, unique_ns, wait_for
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import String
from test_recorder_node import _frame_delivered, _manifest, _pixels, _recorder

from dli_perception.core.contracts import Counts
from dli_perception.nodes.qos import EVENTS

pytestmark = pytest.mark.graph


class TargetSource(FrameSource):
    """Frames plus the raw target inputs: points on ``teach_xy``, text on ``teach_labels``, and target
    parameters set as they are (bad ones included, which the graph client refuses before sending)."""

    def __init__(self, context, ns: str) -> None:
        super().__init__(context, ns)
        self.xy_pub = self.create_publisher(PointStamped, "teach_xy", EVENTS)
        self.labels_pub = self.create_publisher(String, "teach_labels", EVENTS)
        self.params_client = self.create_client(SetParameters, "recorder_node/set_parameters")

    def point(self, x: float, y: float) -> None:
        msg = PointStamped()
        msg.point.x, msg.point.y = x, y
        self.xy_pub.publish(msg)

    def set_param(self, name: str, value: ParameterValue):
        assert self.params_client.wait_for_service(timeout_sec=DISCOVERY_S), "no recorder set_parameters service"
        future = self.params_client.call_async(SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)]))
        assert wait_for(future.done, DEADLINE_S), f"set_parameters {name} not answered"
        return future.result().results[0]


def _diag(teacher, key: str) -> str:
    return teacher.health_value("recorder_node", key)


def _publish_until(teacher, publish, key: str, want: str) -> None:
    """Publish until the recorder's diagnostics show ``key`` == ``want`` (they go out on every change)."""

    def step() -> bool:
        publish()
        return _diag(teacher, key) == want

    assert wait_for(step, DISCOVERY_S, interval=0.05), f"recorder never reported {key}={want!r}"


def _counts_become(teacher, want: dict[str, int]) -> None:
    got = teacher.wait_for_counts(lambda c: c == Counts(want), DEADLINE_S)
    assert got is not None, teacher.history("counts")[-3:]


def _xy(x: float, y: float) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[x, y])


def _labels(*names: str) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=list(names))


def test_regression_targets_from_the_topic_and_the_parameter_service(ros_context, tmp_path):
    ns, root = unique_ns("recorder_xy"), tmp_path / "ds"
    recorder = _recorder(ros_context, ns, root, task="regression", max_frame_age_s=30.0, capture_rate_hz=20.0)
    source = TargetSource(ros_context, ns)
    with Spinner(ros_context, recorder, source), graph_client(ros_context, ns) as teacher:
        _counts_become(teacher, {})
        _frame_delivered(recorder, source, _pixels(0))
        r = teacher.capture()
        assert not r.ok and "no XY target" in r.message and "target_xy" in r.message, r.message
        # the topic sets the target; the capture saves the frame with it
        _publish_until(teacher, lambda: source.point(0.25, -0.5), "target", "xy (0.25, -0.5)")
        assert _diag(teacher, "task") == "regression"
        r = teacher.capture()
        assert r.ok and "with xy (0.25, -0.5)" in r.message, r.message
        # the parameter service sets it too, confirmed by its answer (the graph client's way)
        assert teacher.set_xy(-0.75, 0.5).ok
        _frame_delivered(recorder, source, _pixels(1))
        assert teacher.capture().ok
        # bad targets: refused with the reason, counted, the target unchanged, nothing written
        for bad, words in (((1.5, 0.0), "outside [-1, 1]"), ((math.nan, 0.0), "not a finite point")):
            result = source.set_param("target_xy", _xy(*bad))
            assert not result.successful and words in result.reason, result.reason
        result = source.set_param("target_xy", ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY))
        assert not result.successful and "must be [x, y]" in result.reason
        source.point(2.0, 0.0)
        source.labels_pub.publish(String(data="cup"))
        assert wait_for(lambda: recorder.refused["invalid_target"] >= 3, timeout=DEADLINE_S), recorder.refused
        assert wait_for(lambda: recorder.refused["wrong_task"] >= 1, timeout=DEADLINE_S), recorder.refused
        assert recorder.recorder.xy == (-0.75, 0.5)
        assert wait_for(lambda: _diag(teacher, "refused_invalid_target") == "3", timeout=DEADLINE_S)
        # continuous recording saves each new frame with the target of the moment
        assert teacher.set_xy(0.0, 1.0).ok
        r = teacher.set_recording(True)
        assert r.ok and "with xy (0, 1)" in r.message, r.message
        for i in range(2, 5):
            _frame_delivered(recorder, source, _pixels(i))
            assert wait_for(lambda n=i: recorder.saved >= n + 1, timeout=DEADLINE_S), recorder.saved
        assert teacher.set_recording(False).ok
        assert wait_for(lambda: recorder.pending_jobs == 0, timeout=DEADLINE_S)
        total = recorder.saved
        _counts_become(teacher, {"xy": total})
    targets = [tuple(line["xy"]) for line in _manifest(root)]
    assert targets[:2] == [(0.25, -0.5), (-0.75, 0.5)] and set(targets[2:]) == {(0.0, 1.0)} and len(targets) == total
    assert all(line["class"] == "xy" and (root / line["file"]).is_file() for line in _manifest(root))


def test_multilabel_targets_known_labels_and_per_label_counts(ros_context, tmp_path):
    ns, root = unique_ns("recorder_ml"), tmp_path / "ds"
    recorder = _recorder(ros_context, ns, root, task="multilabel", known_labels="cup,ball,person", max_frame_age_s=30.0)
    source = TargetSource(ros_context, ns)
    with Spinner(ros_context, recorder, source), graph_client(ros_context, ns) as teacher:
        _counts_become(teacher, {"ball": 0, "cup": 0, "person": 0})
        _frame_delivered(recorder, source, _pixels(0))
        r = teacher.capture()
        assert not r.ok and "no label set" in r.message and "teach_labels" in r.message, r.message
        _publish_until(
            teacher, lambda: source.labels_pub.publish(String(data="cup, ball")), "target", "labels [ball, cup]"
        )
        assert teacher.capture().ok
        assert teacher.set_labels(["person"]).ok
        _frame_delivered(recorder, source, _pixels(1))
        assert teacher.capture().ok
        assert teacher.set_labels([]).ok  # the empty set: none of them shown
        _frame_delivered(recorder, source, _pixels(2))
        r = teacher.capture()
        assert r.ok and "labels []" in r.message, r.message
        result = source.set_param("target_labels", _labels("cup", "dragon"))
        assert not result.successful and "unknown label(s) ['dragon']" in result.reason, result.reason
        result = source.set_param("target_labels", _labels("../etc"))
        assert not result.successful and "path separator" in result.reason, result.reason
        source.point(0.1, 0.1)  # an XY target for a multi-label dataset
        assert wait_for(lambda: recorder.refused["wrong_task"] == 1, timeout=DEADLINE_S), recorder.refused
        assert recorder.refused["invalid_target"] == 2 and recorder.recorder.label_set == ()
        _counts_become(teacher, {"ball": 1, "cup": 1, "person": 1})
        assert teacher.capture().message.startswith("duplicate")  # still running, still answering
    assert [line["labels"] for line in _manifest(root)] == [["ball", "cup"], ["person"], []]
    assert (root / "labels.txt").read_text().split() == ["ball", "cup", "person"]  # declared by known_labels


def test_a_task_that_contradicts_the_dataset_refuses_every_capture(ros_context, tmp_path):
    from dli_perception.core.dataset import DatasetStore

    ns, root = unique_ns("recorder_conflict"), tmp_path / "ds"
    with DatasetStore(root) as store:
        store.add(_pixels(0), "cup")
    recorder = _recorder(ros_context, ns, root, task="regression", max_frame_age_s=30.0)
    source = TargetSource(ros_context, ns)
    with Spinner(ros_context, recorder, source), graph_client(ros_context, ns) as teacher:
        assert teacher.set_xy(0.5, 0.5).ok  # a regression recorder takes it
        _frame_delivered(recorder, source, _pixels(1))
        r = teacher.capture()
        assert not r.ok and "holds a classification task but task=regression" in r.message, r.message
        assert wait_for(lambda: (h := teacher.node_health("recorder_node")) and h.level == "error", DEADLINE_S)
        assert "one dataset holds one task" in teacher.node_health("recorder_node").message
    assert [line["class"] for line in _manifest(root)] == ["cup"]
