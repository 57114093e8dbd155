"""The graph client's regression and multi-label actions against a real recorder_node and camera_node:
targets set through the recorder's parameter service, refusals with the node's reason, and the
classifier's XY and label-set results decoded from the topics."""

from __future__ import annotations

import pytest
from graphutil import Spinner, wait_for
from rclpy.parameter import Parameter
from std_msgs.msg import String
from storeutil import manifest

from dli_perception.core.contracts import LabelSet, XYResult
from dli_perception.graph_client import Result, Teacher
from dli_perception.nodes.qos import EVENTS

DEADLINE = 20.0


@pytest.fixture
def teacher():
    t = Teacher(node_name="test_teacher_targets")
    yield t
    t.close()


def _nodes(ros_context, data, **params):
    from dli_perception.nodes.camera_node import CameraNode
    from dli_perception.nodes.recorder_node import RecorderNode

    values = {"dataset_dir": str(data), "max_frame_age_s": 30.0, "dedupe": False, **params}  # a still scene
    recorder = RecorderNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    camera = CameraNode(
        context=ros_context,
        parameter_overrides=[Parameter("width", value=64), Parameter("height", value=48), Parameter("fps", value=20.0)],
    )
    return recorder, camera


def test_xy_targets_through_the_client(ros_context, tmp_path, teacher):
    recorder, camera = _nodes(ros_context, tmp_path / "data", task="regression")
    with Spinner(ros_context, recorder, camera):
        assert teacher.wait_for_nodes(["recorder_node"], DEADLINE) == []
        assert wait_for(lambda: teacher.recorder_task() == "regression", DEADLINE)
        bad = teacher.set_xy(1.2, 0.0)
        assert bad.result is Result.INVALID and "outside [-1, 1]" in bad.message
        wrong = teacher.set_labels(["cup"])
        assert wrong.result is Result.REFUSED and "records regression" in wrong.message, wrong.message
        assert teacher.set_xy(0.5, -0.25).ok, teacher.last_error
        assert wait_for(lambda: recorder._frame is not None, DEADLINE)
        saved = teacher.capture()
        assert saved.ok and saved.path.endswith(".jpg"), saved.message
        assert teacher.set_xy(-1.0, 1.0).ok
        assert wait_for(lambda: (f := recorder._frame) is not None and f.seq > 2, DEADLINE)
        assert teacher.capture().ok
        assert wait_for(lambda: (c := teacher.counts()) is not None and c.per_class == {"xy": 2}, DEADLINE)
    assert [line["xy"] for line in manifest(tmp_path / "data")] == [[0.5, -0.25], [-1.0, 1.0]]


def test_label_sets_through_the_client_and_predictions_decoded(ros_context, tmp_path, teacher):
    from rclpy.node import Node

    recorder, camera = _nodes(ros_context, tmp_path / "data", task="multilabel", known_labels="cup,ball")
    fake = Node("classifier_node", context=ros_context)  # publishes results as the classifier would
    xy_pub = fake.create_publisher(String, "classifier_node/xy_result", EVENTS)
    set_pub = fake.create_publisher(String, "classifier_node/label_set", EVENTS)
    with Spinner(ros_context, recorder, camera, fake):
        assert teacher.wait_for_nodes(["recorder_node"], DEADLINE) == []
        refused = teacher.set_labels(["cup", "dragon"])
        assert refused.result is Result.REFUSED and "unknown label(s) ['dragon']" in refused.message
        junk = teacher.set_labels(["../x"])
        assert junk.result is Result.INVALID and "path separator" in junk.message
        assert teacher.set_labels(["ball", "cup"]).ok, teacher.last_error
        assert wait_for(lambda: recorder._frame is not None, DEADLINE)
        assert teacher.capture().ok
        assert wait_for(lambda: (c := teacher.counts()) is not None and c.per_class == {"ball": 1, "cup": 1}, DEADLINE)

        xy = XYResult(stamp_ns=1_700_000_000_000_000_001, frame_id="cam", x=0.25, y=-0.5, model="/m")
        labels = LabelSet(stamp_ns=5, frame_id="cam", labels=("cup",), scores={"cup": 0.9, "ball": 0.1})

        def heard() -> bool:
            xy_pub.publish(String(data=xy.encode()))
            set_pub.publish(String(data=labels.encode()))
            return teacher.latest("xy_result") == xy and teacher.latest("label_set") == labels

        assert wait_for(heard, DEADLINE, interval=0.1)
    fake.destroy_node()
    assert [line["labels"] for line in manifest(tmp_path / "data")] == [["ball", "cup"]]
