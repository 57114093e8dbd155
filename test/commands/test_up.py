"""``dli-perception up``: which parameters each node gets, in which order, and how mistakes are reported.

The processes themselves (labels, signals, the final zero Twist) are tested in test/test_runner.py.
"""

from __future__ import annotations

import yaml

from dli_perception.commands import up
from dli_perception.errors import ConfigError
from dli_perception.nodes import sets


def test_layers_apply_in_order_config_params_files_arguments_then_p(tmp_path):
    first = tmp_path / "first.yaml"
    first.write_text("camera_node:\n  ros__parameters:\n    fps: 10\n    width: 320\n    height: 240\n")
    second = tmp_path / "second.yaml"
    second.write_text(
        "/**:\n  ros__parameters:\n    use_sim_time: true\ncamera_node:\n  ros__parameters:\n    fps: 12.5\n"
    )
    plan = up.build_plan(
        "classify",
        [first, second],
        ["width:=160", "model_dir:=/models/m"],
        ["camera.width:=96", "reaction_node.stale_timeout_s:=0.25"],
    )
    cam = plan.parameters["camera_node"]
    assert (cam["fps"], cam["width"], cam["height"]) == (12.5, 96, 240)  # second file, -p, first file
    assert cam["source"] == "synthetic" and cam["synthetic.classes"] == [
        "free",
        "blocked",
    ]  # config/camera.yaml
    assert plan.parameters["classifier_node"]["model_dir"] == "/models/m"
    assert plan.parameters["classifier_node"]["use_sim_time"] is True
    assert plan.parameters["reaction_node"]["stale_timeout_s"] == 0.25
    assert plan.sources[: len(plan.node_set.nodes)] == [str(sets.config_file(n)) for n in plan.node_set.nodes]


def test_every_set_resolves_to_the_node_defaults_of_its_config_files():
    for name, node_set in sets.SETS.items():
        plan = up.build_plan(name)
        for node in node_set.nodes:
            defaults = {p.name: p.default for p in sets.node_params(node).values()}
            assert plan.parameters[node] == {k: defaults[k] for k in plan.parameters[node]}, node


def test_ros_parameters_keep_types_including_empty_lists():
    params = up.ros_parameters("camera_node", {"fps": 15.0, "synthetic.classes": [], "device": "0"})
    from rclpy.parameter import Parameter

    by_name = {p.name: p for p in params}
    assert by_name["fps"].type_ == Parameter.Type.DOUBLE
    assert by_name["synthetic.classes"].type_ == Parameter.Type.STRING_ARRAY
    assert by_name["device"].type_ == Parameter.Type.STRING and by_name["device"].value == "0"


def test_dry_run_prints_a_parameter_file_with_namespaced_nodes(capsys):
    assert (
        up.main(["collect", "dataset_dir:=/data/set", "--namespace", "robot1", "--dry-run", "-p", "camera.fps:=5"]) == 0
    )
    data = yaml.safe_load(capsys.readouterr().out)
    assert list(data) == ["/robot1/camera_node", "/robot1/recorder_node"]
    assert data["/robot1/recorder_node"]["ros__parameters"]["dataset_dir"] == "/data/set"
    assert data["/robot1/camera_node"]["ros__parameters"]["fps"] == 5.0


def test_mistakes_end_in_one_line_and_exit_code_1(capsys, tmp_path):
    cases = [
        (["classify", "modeldir:=/m"], "has no argument 'modeldir'"),
        (["classify", "-p", "camera.fsp:=3"], "did you mean 'fps'"),
        (["classify", "-p", "trainer.epochs:=3"], "not a node of set 'classify'"),
        (["classify", "-p", "fps:=3"], "name the node and the parameter"),
        (["train", "epochs:=many"], "expected an integer"),
        (["camera", "--params", str(tmp_path / "missing.yaml")], "cannot read parameter file"),
        (["camera", "--namespace", "bad name"], "invalid namespace"),
    ]
    for argv, message in cases:
        assert up.main([*argv, "--dry-run"]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err


def test_namespace_gets_a_leading_slash_and_is_validated():
    assert up.build_plan("camera", namespace="robot1").namespace == "/robot1"
    try:
        up.build_plan("camera", namespace="/9bad")
    except ConfigError as exc:
        assert "invalid namespace" in str(exc)
    else:
        raise AssertionError("a namespace starting with a digit was accepted")


def test_up_demo_hands_what_follows_to_the_demo_command(capsys):
    """Through the registered CLI (``dli-perception up demo``): fails when demo is not registered."""
    import pytest

    from dli_perception import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["up", "demo", "--help"])
    assert done.value.code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "usage: dli-perception up demo" in out and "--quick" in out  # the demo's own options
    assert cli.main(["up", "--dry-run", "demo", "--quick"]) == 1
    assert "takes only the demo's own options" in capsys.readouterr().err
