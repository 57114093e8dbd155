"""The typed results: decoding what the nodes emit, encode/decode round trips, clear errors."""

from __future__ import annotations

import json
import math

import pytest

from dli_perception.core.contracts import (
    CONTRACTS,
    ClassList,
    Counts,
    Label,
    LabelSet,
    ReactionState,
    Scores,
    TrainProgress,
    TrainStatus,
    XYResult,
)
from dli_perception.core.training import ProgressEvent
from dli_perception.errors import BadMessageError


def test_progress_decodes_the_trainers_events_nan_included():
    from dli_perception.nodes.trainer_node import _finite  # what the node applies before json.dumps

    event = ProgressEvent(
        "epoch",
        3,
        10,
        4,
        4,
        loss=0.5,
        accuracy=0.75,
        eta_s=12.0,
        stage="head",
        val_loss=math.nan,
        val_accuracy=0.8,
        best_val_accuracy=0.8,
        message="improved",
    )
    decoded = TrainProgress.decode(json.dumps(_finite(event.to_dict())))
    assert decoded.phase == "epoch" and decoded.val_loss is None and decoded.val_accuracy == 0.8
    assert decoded.fraction == pytest.approx(0.3)
    assert TrainProgress.decode(decoded.encode()) == decoded
    assert set(json.loads(decoded.encode())) == set(event.to_dict())
    assert ProgressEvent is TrainProgress  # the core's event and the contract are one definition


def test_status_decodes_the_trainers_outcome():
    outcome = {
        "run": 2,
        "dataset_dir": "/d",
        "model_dir": "/m",
        "exported": True,
        "error": "",
        "message": "",
        "status": "completed",
        "best_val_acc": 1.0,
        "best_epoch": 4,
        "epochs_run": 5,
        "classes": ["a", "b"],
        "checkpoint": "/m.checkpoints/best.pt",
        "skipped_images": 0,
        "confusion": [[3, 0], [1, 2]],
        "duration_s": 4.2,
        "finished": "2026-01-01T00:00:00+00:00",
        "task": "classification",
        "headline": "validation accuracy 83.3%",
        "metrics": {},
    }
    status = TrainStatus.decode(json.dumps(outcome))
    assert status.succeeded and status.confusion == ((3, 0), (1, 2)) and status.classes == ("a", "b")
    assert json.loads(status.encode()) == outcome
    regression = TrainStatus.decode(
        json.dumps(
            {"status": "completed", "task": "regression", "metrics": {"mean_error": 0.2, "baseline_mean_error": 0.6}}
        )
    )
    assert regression.task == "regression" and regression.metrics["mean_error"] == 0.2
    with pytest.raises(BadMessageError, match="'metrics'"):
        TrainStatus.decode(json.dumps({"status": "completed", "metrics": {"mean_error": "low"}}))
    failed = TrainStatus.decode(json.dumps({"status": "failed", "error": "two classes needed", "run": 1}))
    assert not failed.succeeded and failed.error == "two classes needed" and failed.best_epoch is None


def test_counts_scores_classes_state_round_trip():
    values = [
        Counts({"free": 3, "blocked": 1}),
        Scores(
            1_700_000_000_123_456_789,
            "camera",
            "free",
            0.9,
            "free",
            0.95,
            {"free": 0.95, "blocked": 0.05},
            True,
            3.5,
            1.25,
            "/m",
        ),
        ClassList(("free", "blocked")),
        Label("free"),
        Label("free", 0.75),
        ReactionState(True, "free", "moving", 0.2, 0.0),
        ReactionState(True, "free", "moving", 0.2, 0.0, 1_700_000_000_000_000_001, "camera"),
        ReactionState(False, None, "disabled"),
        XYResult(1_700_000_000_000_000_002, "camera", 0.25, -0.5, 0.3, -0.45, 4.0, 2.0, "/m", {"inference": 2.0}),
        LabelSet(
            1_700_000_000_000_000_003,
            "camera",
            ("cup",),
            {"cup": 0.8, "ball": 0.1},
            {"cup": 0.5, "ball": 0.6},
            True,
            5.0,
            2.5,
            "/m",
            {"inference": 2.5},
        ),
    ]
    for value in values:
        assert type(value).decode(value.encode()) == value
    assert json.loads(values[1].encode())["stamp"] == {"sec": 1_700_000_000, "nanosec": 123_456_789}
    assert {type(v) for v in values} | {TrainProgress, TrainStatus} == set(CONTRACTS)
    assert json.loads(values[6].encode())["stamp"] == {"sec": 1_700_000_000, "nanosec": 1}


def test_reaction_state_of_an_older_node_decodes_without_a_header():
    old = '{"enabled": true, "label": "free", "reason": "moving", "linear_x": 0.1, "angular_z": 0.0}'
    state = ReactionState.decode(old)
    assert state.stamp_ns is None and state.frame_id == "" and state.moving


def test_label_is_plain_text_or_json_with_a_score():
    assert Label.decode("free") == Label("free")
    assert Label.decode(" blocked\n") == Label("blocked")
    assert Label.decode('{"label": "free", "score": 0.75}') == Label("free", 0.75)
    assert Label.decode('{"label": "free"}') == Label("free")
    assert Label("free").encode() == "free"
    for bad in (
        '{"label": 3}',
        '{"score": 0.5}',
        '{"label": "a", "score": 2}',
        "{nope",
        '{"label": "a", "score": true}',
    ):
        with pytest.raises(BadMessageError):
            Label.decode(bad)


@pytest.mark.parametrize(
    ("contract", "text", "says"),
    [
        (Counts, "[1]", "JSON object"),
        (Counts, '{"a": -1}', "whole number"),
        (Counts, '{"a": 1, "_total": 5}', "not the sum"),
        (TrainProgress, '{"phase": "warp", "epoch": 1, "epochs": 2}', "unknown phase"),
        (TrainProgress, '{"phase": "train", "epochs": 2}', "missing field 'epoch'"),
        (TrainStatus, '{"status": "done"}', "unknown status"),
        (TrainStatus, '{"status": "failed", "confusion": [[1.5]]}', "confusion"),
        (Scores, '{"label": "a", "score": 1}', "stamp"),
        (ClassList, '{"a": 1}', "list of class names"),
        (ReactionState, '{"enabled": "yes", "reason": "x"}', "true or false"),
        (ReactionState, "not json", "not valid JSON"),
    ],
)
def test_bad_messages_are_refused_with_the_reason(contract, text, says):
    with pytest.raises(BadMessageError, match=says):
        contract.decode(text)


def test_xy_and_label_set_refuse_what_the_node_never_sends():
    stamp = {"sec": 1, "nanosec": 2}
    with pytest.raises(BadMessageError, match="'x' must be a finite number"):
        XYResult.decode(json.dumps({"stamp": stamp, "x": "left", "y": 0}))
    with pytest.raises(BadMessageError, match="missing 'stamp'"):
        XYResult.decode(json.dumps({"x": 0, "y": 0}))
    with pytest.raises(BadMessageError, match="list of label names"):
        LabelSet.decode(json.dumps({"stamp": stamp, "labels": "cup"}))
    with pytest.raises(BadMessageError, match=r"\[0, 1\]"):
        LabelSet.decode(json.dumps({"stamp": stamp, "labels": [], "scores": {"cup": 1.5}}))
    # a raw point defaults to the smoothed one when an older sender leaves it out
    assert XYResult.decode(json.dumps({"stamp": stamp, "x": 0.5, "y": -0.25})).raw_x == 0.5
