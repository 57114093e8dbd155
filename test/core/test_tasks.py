"""The task types' targets and output decoding (core/tasks.py) and their place in manifests and metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dli_perception.core import tasks
from dli_perception.core.dataset.manifest import ManifestEntry
from dli_perception.errors import TargetError


def test_xy_range_and_pixel_round_trip():
    assert tasks.validate_xy(-1, 1.0) == (-1.0, 1.0)
    for bad in ((1.01, 0), (0, -1.5), (float("nan"), 0), ("0.1", 0), (True, 0)):
        with pytest.raises(TargetError):
            tasks.validate_xy(*bad)
    assert tasks.pixels_to_xy(0, 0, 640, 480) == (-1.0, -1.0)
    assert tasks.pixels_to_xy(320, 240, 640, 480) == (0.0, 0.0)
    x, y = tasks.pixels_to_xy(480, 120, 640, 480)
    assert (x, y) == (0.5, -0.5)
    assert tasks.xy_to_pixels(x, y, 640, 480) == (480.0, 120.0)


def test_jetbot_names_parse_by_the_image_size_and_bad_ones_are_refused():
    # the road-following layout: pixel coordinates of a 224x224 image
    assert tasks.jetbot_xy("xy_168_56_0b1c.jpg", 224, 224) == (0.5, -0.5)
    assert tasks.jetbot_xy("XY_0_224_id-with_underscores.JPG", 224, 224) == (-1.0, 1.0)
    for bad in ("168_56_x.jpg", "xy_a_56_x.jpg", "xy_168_56.jpg", "xy_1_2_x.gif", "xy_1_2_../x.jpg"):
        with pytest.raises(TargetError, match="road-following layout"):
            tasks.jetbot_xy(bad, 224, 224)
    with pytest.raises(TargetError, match="outside its 224x224 image"):
        tasks.jetbot_xy("xy_300_10_x.jpg", 224, 224)


def test_label_sets_are_canonical_and_unknown_or_unsafe_names_refused():
    assert tasks.validate_label_set(["ball", " cup", "ball"]) == ("ball", "cup")
    assert tasks.parse_label_set("cup, ball") == ("ball", "cup")
    assert tasks.parse_label_set('["cup"]') == ("cup",)
    assert tasks.parse_label_set("") == () == tasks.parse_label_set("[]")
    with pytest.raises(TargetError, match=r"unknown label\(s\) \['dog'\]"):
        tasks.validate_label_set(["dog", "cup"], known=["cup", "ball"])
    with pytest.raises(TargetError, match="path separator"):
        tasks.validate_label_set(["../etc"])
    with pytest.raises(TargetError, match="list of names"):
        tasks.validate_label_set("cup")


def test_mixed_tasks_are_named_and_refused():
    cls = ManifestEntry("a/1.jpg", "a")
    reg = ManifestEntry("xy/2.jpg", "xy", xy=(0.1, 0.2))
    assert tasks.task_of([cls, cls]) == "classification"
    assert tasks.task_of([]) is None
    with pytest.raises(TargetError, match="mixes task types"):
        tasks.task_of([cls, reg])


def test_manifest_lines_carry_targets_and_refuse_bad_ones():
    reg = ManifestEntry("xy/1.jpg", "xy", xy=(0.25, -1.0))
    multi = ManifestEntry("multilabel/2.jpg", "multilabel", labels=())
    for entry in (reg, multi):
        assert ManifestEntry.from_json(json.loads(entry.to_line())) == entry
    assert (reg.task, multi.task) == ("regression", "multilabel")
    with pytest.raises(ValueError, match="outside"):
        ManifestEntry.from_json({"file": "xy/1.jpg", "class": "xy", "xy": [2, 0]})
    with pytest.raises(ValueError, match="both"):
        ManifestEntry.from_json({"file": "xy/1.jpg", "class": "xy", "xy": [0, 0], "labels": []})


def test_outputs_decode_per_task():
    pred = tasks.decode_multilabel(np.array([4.0, -4.0, 0.0]), ["cup", "ball", "box"], {"box": 0.4})
    assert pred.active == ("cup", "box")
    assert pred.thresholds == {"cup": 0.5, "ball": 0.5, "box": 0.4}
    assert pred.scores["ball"] == pytest.approx(1 / (1 + np.exp(4.0)))
    assert tasks.sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]  # no overflow warning
    with pytest.raises(TargetError, match="in \\(0, 1\\)"):
        tasks.decode_multilabel(np.zeros(1), ["cup"], {"cup": 1.0})
    assert tasks.decode_xy(np.array([[1.5, -0.25]])) == (1.5, -0.25)
    with pytest.raises(TargetError, match="2 outputs"):
        tasks.decode_xy(np.zeros(3))
    assert tasks.output_names("regression", ["a"]) == ["x", "y"]
