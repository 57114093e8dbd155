"""``dli-perception demo``: the whole story end to end (``--quick``), Ctrl-C, and its pure parts.

The end-to-end run is a real process running the real nodes: synthetic camera, recorder, trainer
(random weights, 64 px), classifier (onnxruntime), reaction node and the simulated robot. Its
live accuracy must clear a threshold derived from chance that a broken pipeline (constant, random
or swapped labels) cannot reach.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from procutil import interrupt_at

from dli_perception import cli
from dli_perception import demo as D
from dli_perception.core.synthetic import SyntheticScenes
from dli_perception.errors import ConfigError, WeightsNotFoundError

REPO = Path(__file__).resolve().parent.parent
MODULE = "dli_perception.commands.demo"

CLI = Path(sys.prefix) / "bin" / "dli-perception"  # the installed console script: the real registered CLI


def demo_process(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
    assert CLI.exists(), f"{CLI} not found: install the package (scripts/setup_venv.sh)"
    cmd = [
        str(CLI),
        "demo",
        "--quick",
        "--out",
        str(out),
        "--no-progress",
        "--namespace",
        f"demo_test_{os.getpid()}_{out.name}",
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``dli-perception demo --quick`` run: (return code, stdout, stderr, output directory)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = demo_process(out)
    try:
        stdout, stderr = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"the quick demo did not finish in 420 s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return proc.returncode, stdout, stderr, out


def test_quick_demo_completes_cleanly(quick_run):
    rc, stdout, stderr, out = quick_run
    assert rc == 0, stdout[-3000:] + stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    for stage in (
        "[1/5] camera_node",
        "[2/5] recorder_node",
        "[3/5] trainer_node",
        "[4/5] classifier_node",
        "[5/5] reaction_node",
    ):
        assert stage in stdout
    summary = json.loads((out / D.SUMMARY_FILE).read_text())
    assert summary["status"] == "completed" and summary["error"] == ""
    assert set(summary["stage_seconds"]) == set(D.STAGES)


def test_quick_demo_collects_a_correctly_labelled_dataset(quick_run):
    _, _, _, out = quick_run
    from dli_perception.core.dataset import DatasetStore

    per_class = D.DemoConfig.quick().per_class
    with DatasetStore(out / D.DATASET_DIR, readonly=True) as store:
        assert store.counts() == {"blocked": per_class, "free": per_class}
        entries = store.entries
    for cls in ("free", "blocked"):
        assert len([p for p in (out / D.DATASET_DIR / cls).iterdir() if p.suffix == ".jpg"]) == per_class
    dataset = json.loads((out / D.SUMMARY_FILE).read_text())["dataset"]
    assert dataset["mislabelled"] == [] and dataset["verified"] == len(entries) == 2 * per_class
    # Every image was saved from a frame taken inside a scene of its class, by the camera's own schedule.
    camera = json.loads((out / D.SUMMARY_FILE).read_text())["camera"]
    assert camera["schedule_uncertainty_ms"] < 1000 * camera["scene_period_s"] / 4


def test_quick_demo_leaves_a_loadable_model_with_report_plots(quick_run):
    _, stdout, _, out = quick_run
    from dli_perception.core.modeldir import REPORT_DIR, load_metadata
    from dli_perception.core.report import CONFUSION_FILE, CURVES_FILE

    meta = load_metadata(out / D.MODEL_DIR)
    assert meta.classes == ["blocked", "free"] and meta.preprocess.size == D.DemoConfig.quick().image_size
    assert meta.weights_source in ("none", "imagenet:ResNet18_Weights.IMAGENET1K_V1")
    for name in (CURVES_FILE, CONFUSION_FILE):
        data = (out / D.MODEL_DIR / REPORT_DIR / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    training = json.loads((out / D.SUMMARY_FILE).read_text())["training"]
    assert training["status"] == "completed" and 0.0 <= training["best_val_acc"] <= 1.0
    assert f"validation accuracy {100 * training['best_val_acc']:.1f}%" in stdout
    if meta.weights_source == "none":
        assert "note: the ImageNet weights of resnet18 are not in the torch hub cache" in stdout


def test_quick_demo_live_accuracy_is_far_above_chance(quick_run):
    _, stdout, _, out = quick_run
    live = json.loads((out / D.SUMMARY_FILE).read_text())["live"]
    chance = live["chance"]
    assert chance == 0.5
    # Halfway from chance to perfect: constant, random or swapped labels score chance or less.
    threshold = chance + (1 - chance) / 2
    assert live["scored"] >= 20, live
    assert live["accuracy"] >= threshold, live
    assert live["label_accuracy"] >= threshold, live
    assert set(live["per_class"]) == {"free", "blocked"}
    printed = re.search(r"live accuracy (\d+\.\d)% per frame \((\d+) of (\d+) frames", stdout)
    assert printed, stdout[-2000:]
    assert float(printed.group(1)) == pytest.approx(100 * live["accuracy"], abs=0.051)
    assert int(printed.group(3)) == live["scored"]


def test_quick_demo_drives_forward_when_free_and_turns_when_blocked(quick_run):
    _, stdout, _, out = quick_run
    drive = json.loads((out / D.SUMMARY_FILE).read_text())["drive"]
    free, blocked = drive["per_class"]["free"], drive["per_class"]["blocked"]
    assert free["seconds"] > 1.0 and blocked["seconds"] > 1.0
    # free -> 0.15 m/s forward, blocked -> 1 rad/s in place (after the label follows the scene and the ramp)
    assert free["distance_m"] > 0.05 and free["distance_m"] > 3 * blocked["distance_m"]
    assert blocked["rotation_rad"] > 0.5 and blocked["rotation_rad"] > 3 * free["rotation_rad"]
    assert drive["commands"] > 20
    pose = drive["final_pose"]
    assert math.hypot(pose["x_m"], pose["y_m"]) > 0.05
    assert "label free       -> linear.x +0.15 m/s" in stdout and "angular.z +1.00 rad/s" in stdout
    assert "the robot stopped at" in stdout


def test_quick_demo_log_holds_the_story_and_the_nodes_messages(quick_run):
    _, _, _, out = quick_run
    log = (out / D.LOG_FILE).read_text()
    assert "[5/5] reaction_node" in log
    for node in ("camera_node", "recorder_node", "trainer_node", "classifier_node", "reaction_node"):
        assert f".{node}]" in log, node
    assert (out / D.MARKER_FILE).is_file()


def test_ctrl_c_while_collecting_stops_cleanly_and_keeps_partial_outputs(tmp_path):
    out = tmp_path / "stopped"
    proc = demo_process(out)
    rc, stdout, stderr = interrupt_at(proc, "[2/5]", 1.0)  # some images are being captured
    assert rc == 130, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert "interrupted during the collect stage" in stdout and "stopped early" in stdout
    summary = json.loads((out / D.SUMMARY_FILE).read_text())
    assert summary["status"] == "interrupted" and summary["stage"] == "collect"
    from dli_perception.core.dataset import DatasetStore

    # The recorder closed the dataset: it opens for writing again (the lock was released) and is consistent.
    with DatasetStore(out / D.DATASET_DIR) as store:
        assert store.repair_report.clean
        assert sum(store.counts().values()) < 2 * D.DemoConfig.quick().per_class
    assert not (out / D.MODEL_DIR).exists()


# --------------------------------------------------------------------------- the scene schedule


def test_schedule_agrees_with_the_synthetic_scenes_and_refuses_uncertain_moments():
    scenes = SyntheticScenes(("a", "b", "c"), 16, 16, scene_period=2.0)
    opened = 1_000_000_000_000
    exact = D.SceneSchedule(scenes.classes, 2.0, opened, opened)
    for t in (0.1, 1.9, 2.1, 5.0, 7.99, 123.4):
        assert exact.class_at(opened + round(t * 1e9)) == scenes.class_at(t)
    fuzzy = D.SceneSchedule(scenes.classes, 2.0, opened, opened + 100_000_000)  # opened within 100 ms
    assert fuzzy.uncertainty_s == pytest.approx(0.1)
    assert fuzzy.class_at(opened + 1_000_000_000) == "a"
    assert fuzzy.class_at(opened + 2_050_000_000) is None  # the change may be before or after
    assert fuzzy.class_at(opened + 2_150_000_000) == "b"
    assert fuzzy.class_at(opened + 2_150_000_000, guard_s=0.1) is None
    assert fuzzy.class_at(opened - 1) is None  # before the camera opened
    assert fuzzy.class_between(opened + 200_000_000, opened + 1_800_000_000) == "a"
    assert fuzzy.class_between(opened + 200_000_000, opened + 2_500_000_000) is None
    assert fuzzy.scene_index(opened + 4_500_000_000) == 2 and fuzzy.scene_index(opened + 4_050_000_000) is None
    narrowed = fuzzy.narrowed(opened + 20_000_000)  # a frame stamped 20 ms after opened_after exists
    assert narrowed.opened_before_ns == opened + 20_000_000 and narrowed.class_at(opened + 2_050_000_000) == "b"
    with pytest.raises(ConfigError):
        D.SceneSchedule(("a",), 1.0, 10, 5)


# --------------------------------------------------------------------------- the simulated robot


def test_robot_drives_straight_turns_in_place_and_follows_arcs():
    robot = D.SimulatedRobot(timeout_s=10.0)
    robot.command(0.5, 0.0, 0.0)
    assert robot.command(0.0, math.pi / 2, 2.0) == pytest.approx((2.0, 1.0, 0.0))
    assert robot.pose() == pytest.approx((1.0, 0.0, 0.0))
    robot.command(0.0, 0.0, 3.0)  # a quarter turn in place
    assert robot.pose() == pytest.approx((1.0, 0.0, math.pi / 2))
    robot.command(1.0, 1.0, 4.0)
    robot.advance(4.0 + math.pi)  # half a circle of radius 1 m, counter-clockwise, heading +y
    x, y, theta = robot.pose()
    assert (x, y) == pytest.approx((-1.0, 0.0), abs=1e-9) and abs(theta) == pytest.approx(math.pi / 2)
    assert robot.commands == 4


def test_robot_stops_when_commands_stop_arriving():
    robot = D.SimulatedRobot(timeout_s=0.5)
    robot.command(0.2, 0.0, 10.0)
    seconds, distance, _ = robot.advance(15.0)  # no command for 5 s: held for 0.5 s only
    assert seconds == pytest.approx(5.0) and distance == pytest.approx(0.1)
    assert robot.pose()[0] == pytest.approx(0.1)
    assert robot.advance(14.0) == (0.0, 0.0, 0.0)  # time never runs backwards


# --------------------------------------------------------------------------- options and outputs


def test_config_checks_and_quick_preset():
    quick = D.DemoConfig.quick(out="~/x")
    assert quick.image_size < D.DemoConfig().image_size and quick.per_class < D.DemoConfig().per_class
    assert quick.out == Path("~/x").expanduser()
    assert D.DemoConfig(classes="a, b,c").classes == ("a", "b", "c")
    for bad in (
        {"classes": ("only",)},
        {"classes": ("a", "a")},
        {"classes": ("a", "unknown")},
        {"classes": ("a", "../b")},
        {"per_class": 2},
        {"scene_period_s": 1.0, "fps": 1.0},
        {"image_size": 8},
    ):
        with pytest.raises(ConfigError):
            D.DemoConfig(**bad)


def test_out_dir_is_replaced_only_when_it_holds_an_earlier_demo(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        D.prepare_out_dir(mine)
    assert (mine / "thesis.txt").read_text() == "keep me"

    out = tmp_path / "demo"
    assert D.prepare_out_dir(out) is False
    (out / D.DATASET_DIR / "free").mkdir(parents=True)
    (out / D.DATASET_DIR / "free" / "1.jpg").write_bytes(b"x")
    (out / D.SUMMARY_FILE).write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert D.prepare_out_dir(out) is True
    assert not (out / D.DATASET_DIR).exists() and not (out / D.SUMMARY_FILE).exists()
    assert (out / "notes.txt").read_text() == "mine"  # not an output of the demo: left alone
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        D.prepare_out_dir(tmp_path / "file")


def test_action_tables_for_the_scene_classes():
    from dli_perception.core.action_table import load_action_table

    assert D.action_table_for(("free", "blocked")) is None  # the reaction node's built-in table
    table = load_action_table(D.action_table_for(("go", "left", "right", "halt")))
    assert table.lookup("go")[0].linear_x > 0 and table.lookup("left")[0].angular_z > 0
    assert table.lookup("right")[0].angular_z < 0 and not table.lookup("halt")[0].moves


def test_weights_fall_back_to_random_only_when_not_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights, note = D.resolve_weights(None)
    assert weights == "none" and "not in the torch hub cache" in note and "lower accuracy" in note
    with pytest.raises(WeightsNotFoundError):
        D.resolve_weights("imagenet")
    with pytest.raises(WeightsNotFoundError):
        D.resolve_weights(str(tmp_path / "missing.pth"))
    assert D.resolve_weights("none")[0] == "none"
    from dli_perception.core.training import imagenet_weights_path

    cached = imagenet_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"placeholder")  # only its presence is checked here; training would load it
    assert D.resolve_weights(None) == ("imagenet", "")
    assert D.resolve_weights(str(cached)) == (str(cached.resolve()), "")


def test_the_cli_registers_demo():
    assert MODULE in cli.COMMANDS
    assert re.search(r"^\s+demo\s", cli.build_parser().format_help(), re.M), cli.build_parser().format_help()


def test_command_options_map_onto_the_config():
    from dli_perception.commands import demo as command

    parser = cli.build_parser()  # the real CLI: fails here when demo is not registered
    args = parser.parse_args(
        [
            "demo",
            "--quick",
            "--classes",
            "up,down,left",
            "--per-class",
            "7",
            "--out",
            "o",
            "--scene-period",
            "2.5",
            "--weights",
            "none",
        ]
    )
    config = command.config_from_args(args)
    assert config.classes == ("up", "down", "left") and config.per_class == 7 and config.scene_period_s == 2.5
    assert config.image_size == D.DemoConfig.quick().image_size and config.weights == "none"
    assert command.config_from_args(parser.parse_args(["demo"])).image_size == D.DemoConfig().image_size
