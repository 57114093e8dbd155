"""Node sets: typed launch-argument values, parameter files as ``up`` reads them, parameter checks."""

from __future__ import annotations

import pytest

from dli_perception.errors import ConfigError
from dli_perception.nodes import sets


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("0", "auto", "0"),  # strings verbatim: a device index stays a string
        ("", "x", ""),
        ("640", 480, 640),
        ("30", 1.5, 30.0),
        ("1e-3", 0.5, 0.001),  # YAML 1.1 would read this as a string
        ("true", False, True),
        ("[a, b]", ["free"], ["a", "b"]),
    ],
)
def test_parse_value_gives_the_parameter_type(text, default, expected):
    value = sets.parse_value(text, default, "x")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "default"),
    [("abc", 1), ("1.5", 1), ("1", True), ("yes please", 0.5), ("[1, x]", [0]), ("true", 3)],
)
def test_parse_value_refuses_other_types(text, default):
    with pytest.raises(ConfigError, match="expected"):
        sets.parse_value(text, default, "where")


def test_coerce_asks_to_quote_a_number_given_for_a_string():
    with pytest.raises(ConfigError, match="quote it"):
        sets.coerce(0, "0", "camera_node.device")


@pytest.mark.parametrize("value", [True, False, 0, 17, 0.25, 30.0, "", "auto"])
def test_format_value_round_trips(value):
    assert sets.parse_value(sets.format_value(value), value, "x") == value


def test_argument_overrides_keep_only_changed_values_for_launch():
    classify = sets.node_set("classify")
    texts = {"fps": "30.0", "width": "320", "model_dir": "/m", "start_enabled": "false"}
    assert sets.argument_overrides(classify, texts, only_changed=True) == {
        "camera_node": {"width": 320},
        "classifier_node": {"model_dir": "/m"},
        "reaction_node": {},
    }
    every = sets.argument_overrides(classify, texts, only_changed=False)
    assert every["camera_node"] == {"fps": 30.0, "width": 320} and every["reaction_node"] == {"start_enabled": False}
    with pytest.raises(ConfigError, match="has no argument 'modeldir'"):
        sets.argument_overrides(classify, {"modeldir": "/m"}, only_changed=False)
    with pytest.raises(ConfigError, match="choose one of"):
        sets.node_set("clasify")


def test_load_params_file_reads_named_namespaced_and_wildcard_sections(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    use_sim_time: true\n"
        "camera_node:\n  ros__parameters:\n    fps: 15\n    synthetic:\n      seed: 3\n"
        "/robot/classifier_node:\n  ros__parameters:\n    model_dir: /m\n"
        "diff_drive_controller:\n  ros__parameters:\n    wheels: 2\n"
    )
    got = sets.load_params_file(path, ["camera_node", "classifier_node"])
    assert got == {
        "camera_node": {"use_sim_time": True, "fps": 15, "synthetic.seed": 3},
        "classifier_node": {"use_sim_time": True, "model_dir": "/m"},
    }


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read"),
        ("a: [", "not valid YAML"),
        ("camera_node:\n  fps: 3\n", "not a ROS 2 parameter file"),
    ],
)
def test_load_params_file_errors_say_what_is_wrong(tmp_path, content, match):
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        sets.load_params_file(path, ["camera_node"])


def test_checked_parameters_catch_typos_types_and_refused_values():
    ok = sets.checked_parameters("camera_node", {"fps": 15, "use_sim_time": True, "qos_overrides./x.depth": 2})
    assert ok == {"fps": 15.0, "use_sim_time": True, "qos_overrides./x.depth": 2} and type(ok["fps"]) is float
    with pytest.raises(ConfigError, match="did you mean 'fps'"):
        sets.checked_parameters("camera_node", {"fsp": 15})
    with pytest.raises(ConfigError, match="expected an integer"):
        sets.checked_parameters("camera_node", {"width": "wide"})
    with pytest.raises(ConfigError, match="not one of"):
        sets.checked_parameters("camera_node", {"source": "webcam"})


def test_config_file_and_params_file_argument_follow_the_node_name(tmp_path):
    assert sets.config_file("reaction_node", tmp_path) == tmp_path / "reaction.yaml"
    assert sets.params_file_argument("classifier_node") == "classifier_params_file"
    with pytest.raises(ConfigError, match="not a node"):
        sets.node_params("lidar_node")
