"""The regression and multi-label loops as an outside user runs them: train with the CLI, predict offline
with the CLI, start classifier_node with DEFAULT parameters as its own process, publish fresh images and
read the stamped results; the graph must say what the offline prediction says for the same images.

Random-init ResNet-18 on small synthetic data (no ImageNet weights here): the check is agreement between
the graph and the offline path, and that training learned something (regression beats always predicting
the mean target), not the accuracy of a real robot's model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from classifier_rig import frame_msg
from geometry_msgs.msg import PointStamped
from graphutil import Collector, Spinner, stop_and_check, wait_for
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dli_perception import cli
from dli_perception.core import synthetic
from dli_perception.core.contracts import LabelSet
from dli_perception.core.imagefiles import decode_rgb
from dli_perception.nodes.qos import EVENTS, SENSOR_DATA

pytestmark = [pytest.mark.graph, pytest.mark.slow]

TRAIN = "--size 48 --weights none --epochs 4 --mode finetune --batch-size 8 --threads 1 --early-stop 0".split()
START_S = 60.0  # the node process's start (rclpy, onnxruntime, the model) on 2 busy cores
RESULT_S = 30.0


def _cli(capsys, *argv: object) -> str:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _offline(capsys, model: Path, files: list[Path]) -> dict[str, dict]:
    rows = [json.loads(line) for line in _cli(capsys, "classify", model, *files, "--json").splitlines() if line]
    return {Path(r["file"]).name: r for r in rows}


def _serve(
    node_process, ros_context, model: Path, files: list[Path], msg_type, topic: str, stop: str
) -> dict[str, object]:
    """Start classifier_node (defaults but the model) as a process, publish each file until its result
    arrives; returns {file name: the message received for it}, then stops the node as ``stop`` says
    (``stop_and_check``: int, int2 or term), which must end it with exit 0 and no traceback."""
    proc = node_process("classifier_node", "-p", f"model_dir:={model}")
    source = Node("loop_frames", context=ros_context)
    pub = source.create_publisher(Image, "image_raw", SENSOR_DATA)
    got = Collector(ros_context, msg_type, topic, EVENTS, name="results")
    results: dict[str, object] = {}
    with Spinner(ros_context, source, got):
        assert wait_for(lambda: pub.get_subscription_count() > 0 or proc.proc.poll() is not None, START_S), (
            proc.output()
        )
        for i, path in enumerate(files):
            stamp = 1_900_000_000_000_000_000 + i * 1_000_003
            msg = frame_msg(decode_rgb(path.read_bytes()), stamp, f"cam_{i}")

            def stamp_of(m) -> int:
                if isinstance(m, String):
                    return LabelSet.decode(m.data).stamp_ns
                return m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec

            def arrived(msg=msg, stamp=stamp) -> bool:  # publish until the node (maybe still loading) takes it
                if any(stamp_of(m) == stamp for m in list(got.msgs)):
                    return True
                pub.publish(msg)
                return False

            assert wait_for(arrived, RESULT_S, interval=0.3), proc.output()
            results[path.name] = next(m for m in list(got.msgs) if stamp_of(m) == stamp)
        assert stop_and_check(proc, stop) == 0, proc.output()
    assert "Traceback" not in proc.stderr(), proc.stderr()
    return results


def test_regression_from_a_road_following_folder_graph_matches_offline(node_process, ros_context, tmp_path, capsys):
    train_dir, held_out = tmp_path / "road", tmp_path / "held_out"
    synthetic.write_jetbot_folder(train_dir, 48, size=(64, 64), seed=11)
    written = synthetic.write_jetbot_folder(held_out, 6, size=(64, 64), seed=12)
    model = tmp_path / "road_model"
    _cli(capsys, "train", train_dir, model, *TRAIN)
    files = [path for path, _ in written]
    offline = _offline(capsys, model, files)
    points = _serve(node_process, ros_context, model, files, PointStamped, "xy", stop="term")
    for i, path in enumerate(files):
        point, want = points[path.name], offline[path.name]
        assert point.header.frame_id == f"cam_{i}"
        assert (point.point.x, point.point.y) == pytest.approx((want["x"], want["y"]), abs=1e-4), path.name


def test_multilabel_graph_matches_offline(node_process, ros_context, tmp_path, capsys):
    data = tmp_path / "shapes"
    synthetic.make_multilabel_dataset(data, 40, size=48, seed=5)
    model = tmp_path / "shapes_model"
    _cli(capsys, "train", data, model, *TRAIN)
    scenes = synthetic.TargetScenes(48, 48, seed=99)
    rng = np.random.default_rng(3)
    files = []
    for i in range(6):
        present = [label for label in scenes.labels if rng.random() < 0.5]
        path = tmp_path / f"held_{i}.png"
        import cv2

        assert cv2.imwrite(str(path), cv2.cvtColor(scenes.render_labels(present, 500 + i), cv2.COLOR_RGB2BGR))
        files.append(path)
    offline = _offline(capsys, model, files)
    sets = _serve(node_process, ros_context, model, files, String, "/classifier_node/label_set", stop="int2")
    for path in files:
        result, want = LabelSet.decode(sets[path.name].data), offline[path.name]
        assert list(result.labels) == want["labels"], path.name
        assert result.scores == pytest.approx(want["scores"], abs=1e-4)
        assert result.thresholds == pytest.approx(want["thresholds"])
