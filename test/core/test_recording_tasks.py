"""The recorder without ROS for regression (XY targets) and multi-label (label sets) datasets.

A real DatasetStore and writer thread, as in test_recording: the manifest on disk must hold the
targets that were current at each capture, and every bad target must be refused with its reason,
counted, and leave the dataset as it was.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from storeutil import manifest
from test_recording import _answer, _files, _frame, _Host

from dli_perception.core.contracts import Counts
from dli_perception.core.dataset import DatasetStore
from dli_perception.core.recording import Recorder
from dli_perception.core.recording_jobs import INVALID_TARGET, NO_TARGET, WRONG_TASK
from dli_perception.core.recording_targets import check_labels, parse_known_labels, resolve_task
from dli_perception.errors import TargetError


@pytest.fixture
def make(tmp_path):
    made = []

    def make(root=None, known_labels=None, **options):
        host = _Host()
        store = DatasetStore(root or tmp_path / "ds", known_labels=known_labels)
        rec = Recorder(store, hooks=host.hooks, **options)
        rec.start()
        made.append(rec)
        return rec, host

    yield make
    for rec in made:
        rec.close(drain_timeout_s=2.0)


def _manifest(rec: Recorder) -> list[dict]:
    rec.store.flush()
    return manifest(rec.store.root)


def test_regression_captures_carry_the_current_xy_target(make):
    rec, host = make(task="regression", max_frame_age_s=60.0)
    rec.offer_frame(_frame(0), 0)
    refused = _answer(rec.capture())
    assert refused.reason == NO_TARGET and "teach_xy" in refused.message and "target_xy" in refused.message
    assert rec.set_xy(0.25, -0.5).success
    saved = _answer(rec.capture())
    assert saved.success, saved.message
    assert "with xy (0.25, -0.5)" in saved.message and saved.message.startswith(f"saved {saved.path} as 'xy'")
    rec.offer_frame(_frame(1), 0)
    assert rec.set_xy(-1, 1).success  # the corners are inside the image
    assert _answer(rec.capture()).success
    assert [line["xy"] for line in _manifest(rec)] == [[0.25, -0.5], [-1.0, 1.0]]
    assert host.counts[-1] == Counts({"xy": 2})
    level, summary, values = rec.status()
    assert (values["task"], values["target"], values["images"]) == ("regression", "xy (-1, 1)", 2)
    undone = _answer(rec.undo())
    assert undone.success and "(1 in total)" in undone.message


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (1.5, 0.0, "outside [-1, 1]"),
        (0.0, -1.0001, "outside [-1, 1]"),
        (math.nan, 0.0, "not a finite point"),
        (0.0, math.inf, "not a finite point"),
        ("0.5", 0.0, "must be a number"),
        (True, 0.0, "must be a number"),
    ],
)
def test_a_bad_xy_target_is_refused_and_the_previous_one_stays(make, x, y, words):
    rec, host = make(task="regression", max_frame_age_s=60.0)
    assert rec.set_xy(0.1, 0.2).success
    outcome = rec.set_xy(x, y)
    assert not outcome.success and outcome.reason == INVALID_TARGET and words in outcome.message
    assert rec.xy == (0.1, 0.2) and rec.refused == Counter(invalid_target=1)
    assert host.lines[-1][0] == "warning" and words in host.lines[-1][1]
    rec.offer_frame(_frame(3), 0)
    assert _answer(rec.capture()).success
    assert [line["xy"] for line in _manifest(rec)] == [[0.1, 0.2]]


def test_multilabel_captures_carry_the_current_label_set_and_count_per_label(make):
    # the dataset declares its labels (labels.txt): a set naming another is refused
    rec, host = make(task="multilabel", max_frame_age_s=60.0, known_labels=("ball", "cup", "person"))
    assert rec.known_labels == ("ball", "cup", "person")
    assert host.counts[-1] == Counts({"ball": 0, "cup": 0, "person": 0})
    rec.offer_frame(_frame(0), 0)
    assert _answer(rec.capture()).reason == NO_TARGET
    sets = ["cup,ball", '["person"]', ""]  # text as teach_labels carries it; "" is "none of them"
    for i, text in enumerate(sets):
        assert rec.set_labels(text).success
        rec.offer_frame(_frame(10 + i), 0)
        saved = _answer(rec.capture())
        assert saved.success, saved.message
    assert [line["labels"] for line in _manifest(rec)] == [["ball", "cup"], ["person"], []]
    assert host.counts[-1] == Counts({"ball": 1, "cup": 1, "person": 1})
    assert rec.status()[2]["images"] == 3
    # unknown names, junk, and a list with a bad name: refused, nothing changed
    for bad in ("cup,dragon", "../x", ["cup", 3], '["cup"'):
        outcome = rec.set_labels(bad)
        assert not outcome.success and outcome.reason == INVALID_TARGET, (bad, outcome)
    assert "unknown label(s) ['dragon']" in rec.set_labels("dragon").message
    assert rec.label_set == () and len(_manifest(rec)) == 3


def test_a_target_of_another_task_is_refused_with_what_to_do(make, tmp_path):
    rec, _ = make(max_frame_age_s=60.0)  # auto on an empty dataset: classification
    assert rec.task == "classification"
    xy = rec.set_xy(0.0, 0.0)
    assert xy.reason == WRONG_TASK and "task:=regression" in xy.message
    assert rec.set_labels("cup").reason == WRONG_TASK
    rec.set_label("cup")
    rec.offer_frame(_frame(0), 0)
    assert _answer(rec.capture()).success
    rec.close()
    # the dataset now holds classification: auto follows it, an explicit regression task is refused
    again, _ = make(tmp_path / "ds")
    assert again.task == "classification"
    again.close()
    wrong, host = make(tmp_path / "ds", task="regression", max_frame_age_s=60.0)
    assert any(level == "error" and "holds a classification task" in text for level, text in host.lines)
    assert wrong.set_xy(0.5, 0.5).success
    wrong.offer_frame(_frame(1), 0)
    refused = _answer(wrong.capture())
    assert refused.reason == WRONG_TASK and "nothing was saved" in refused.message
    assert wrong.status()[0] == "error"
    assert _files(wrong.store.root) == Counter(cup=1)


def test_recording_continuously_saves_frames_with_the_target_of_the_moment(make):
    rec, host = make(task="regression", max_frame_age_s=60.0)
    assert "no target yet" in rec.set_recording(True).message
    rec.offer_frame(_frame(0), 0)
    rec.tick()  # no target: skipped, not queued
    rec.set_xy(0.5, 0.5)
    rec.tick()
    rec.offer_frame(_frame(1), 0)
    rec.set_xy(-0.5, 0.0)
    rec.tick()
    rec.set_recording(False)
    assert rec.close()
    lines = manifest(rec.store.root)
    assert [line["xy"] for line in lines] == [[0.5, 0.5], [-0.5, 0.0]]
    assert rec.refused[NO_TARGET] == 1


def test_target_helpers():
    assert resolve_task("auto", None) == ("classification", "")
    assert resolve_task("auto", "multilabel") == ("multilabel", "")
    task, conflict = resolve_task("regression", "multilabel")
    assert task == "regression" and "one dataset holds one task" in conflict
    with pytest.raises(TargetError, match="not one of auto, classification"):
        resolve_task("detection", None)
    assert parse_known_labels(" ") is None and parse_known_labels("cup, ball") == ("ball", "cup")
    assert check_labels(["cup", "cup"], None) == ("cup",)


def test_a_declared_vocabulary_makes_an_empty_dataset_multilabel(make, tmp_path):
    rec, host = make(tmp_path / "declared", known_labels=("cup",))  # task auto: labels.txt says multi-label
    assert rec.task == "multilabel" and host.counts[-1] == Counts({"cup": 0})
    assert (tmp_path / "declared" / "labels.txt").is_file()
    undeclared, _ = make(tmp_path / "open", task="multilabel")  # no labels.txt: any valid names
    assert undeclared.known_labels is None and undeclared.set_labels("anything,goes").success
