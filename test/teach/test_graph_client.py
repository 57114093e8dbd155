"""The graph client against the real nodes: every action's result, and the typed results decoded from
what the nodes really publish (each one also survives encode -> decode unchanged)."""

from __future__ import annotations

import json
import time

import pytest
from fixtures_models import build_colour_model_dir
from geometry_msgs.msg import Twist
from graphutil import Collector, Spinner, wait_for
from rclpy.parameter import Parameter

from dli_perception.core.contracts import ClassList, Counts, ReactionState, Scores
from dli_perception.graph_client import Result, Teacher
from dli_perception.nodes.qos import EVENTS

DEADLINE = 20.0


def _round_trips(value) -> None:
    assert type(value).decode(value.encode()) == value


@pytest.fixture
def teacher():
    t = Teacher(node_name="test_teacher")
    yield t
    t.close()


def test_teach_capture_undo_and_classify_through_the_client(ros_context, tmp_path, teacher):
    from dli_perception.nodes.camera_node import CameraNode
    from dli_perception.nodes.classifier_node import ClassifierNode
    from dli_perception.nodes.recorder_node import RecorderNode

    model = build_colour_model_dir(tmp_path / "model", ("red", "green", "blue"))
    recorder = RecorderNode(
        context=ros_context, parameter_overrides=[Parameter("dataset_dir", value=str(tmp_path / "data"))]
    )
    spinner = Spinner(ros_context, recorder)
    with spinner:
        assert teacher.wait_for_nodes(["recorder_node"], DEADLINE) == []
        # bad input is refused here, nothing sent; a capture before any frame is refused by the node
        bad = teacher.set_label("../etc")
        assert bad.result is Result.INVALID and "path separator" in bad.message
        assert teacher.set_label("red").ok, teacher.last_error
        early = teacher.capture()
        assert early.result is Result.REFUSED and "no frame" in early.message
        assert teacher.last_error == early.message

        camera = spinner.add(
            CameraNode(
                context=ros_context,
                parameter_overrides=[
                    Parameter("width", value=64),
                    Parameter("height", value=48),
                    Parameter("fps", value=20.0),
                ],
            )
        )
        assert wait_for(lambda: recorder._frame is not None, DEADLINE)
        saved = teacher.capture()
        assert saved.ok, saved.message
        assert saved.path.endswith(".jpg") and (tmp_path / "data" / "red").is_dir()
        assert wait_for(lambda: (c := teacher.counts()) is not None and c.per_class == {"red": 1}, DEADLINE)
        raw = json.loads(Counts({"red": 1}).encode())
        assert raw == {"red": 1, "_total": 1}  # the recorder's own format
        _round_trips(teacher.counts())

        undone = teacher.undo()
        assert undone.ok and saved.path.endswith(undone.path), (saved, undone)
        assert wait_for(lambda: teacher.counts().per_class == {}, DEADLINE)
        nothing = teacher.undo()
        assert nothing.result is Result.REFUSED and "nothing to undo" in nothing.message

        assert teacher.set_recording(True).ok
        assert wait_for(lambda: teacher.counts().total >= 2, DEADLINE)
        assert teacher.set_recording(False).ok

        classifier = spinner.add(
            ClassifierNode(
                context=ros_context,
                parameter_overrides=[Parameter("backend", value="onnxruntime"), Parameter("threads", value=1)],
            )
        )
        assert wait_for(lambda: teacher.switch_model(str(model)).ok, DEADLINE), teacher.last_error
        assert teacher.wait_for_model(str(model), DEADLINE).ok, teacher.last_error
        scores = teacher.scores()
        assert isinstance(scores, Scores) and set(scores.scores) == {"red", "green", "blue"}
        assert scores.stamp_ns > 0 and scores.frame_id == "camera"
        _round_trips(scores)
        assert wait_for(lambda: teacher.classes() == ClassList(("red", "green", "blue")), DEADLINE)
        _round_trips(teacher.classes())
        assert wait_for(lambda: {"recorder_node", "classifier_node", "camera_node"} <= set(teacher.health()), DEADLINE)
        assert teacher.node_health("classifier_node").current_level() in ("ok", "warn")
        del camera, classifier


def test_enable_stop_and_a_node_that_is_missing(ros_context, teacher):
    from dli_perception.nodes.reaction_node import ReactionNode

    missing = teacher.capture(timeout_s=0.5)
    assert missing.result is Result.UNAVAILABLE and "recorder_node is not running" in missing.message

    reaction = ReactionNode(context=ros_context)
    twists = Collector(ros_context, Twist, "cmd_vel", EVENTS, name="twists")
    with Spinner(ros_context, reaction, twists):
        assert teacher.enable_reaction(True, timeout_s=DEADLINE).ok
        assert wait_for(lambda: (s := teacher.reaction_state()) is not None and s.enabled, DEADLINE)
        state = teacher.reaction_state()
        assert isinstance(state, ReactionState)
        _round_trips(state)
        teacher_twists_before = twists.count()
        t0 = time.monotonic()
        stopped = teacher.stop()
        assert stopped.ok, stopped.message
        assert time.monotonic() - t0 < 2.0
        assert wait_for(lambda: not teacher.reaction_state().enabled, DEADLINE)
        assert wait_for(lambda: twists.count() > teacher_twists_before, DEADLINE)
        last = twists.msgs[-1]
        assert last.linear.x == 0.0 and last.angular.z == 0.0
