"""Launch files and YAML parameter files agree with what the nodes declare.

launch/launch_ros are not installable from PyPI, so these checks read the launch files'
source (AST) and the YAML files and compare every executable, launch argument and
parameter key against setup.py's console scripts and each node's declared parameters.
When launch_ros is importable (a robot, or a scratch env), test_launch_runs.py runs them for real.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest
import yaml

from dli_perception.nodes.sets import flatten_parameters

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIG_FILES = sorted((REPO / "config").glob("*.yaml"))
LAUNCH_ONLY_ARGUMENTS = {"namespace", "params_file", "fastdds_profile"}


def _is_action_table(path: Path) -> bool:
    """Action tables for reaction_node (top-level ``actions:``) are not ROS parameter files."""
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "actions" in data


ACTION_TABLES = [p for p in CONFIG_FILES if _is_action_table(p)]
PARAM_FILES = [p for p in CONFIG_FILES if p not in ACTION_TABLES]


def _setup_nodes() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no NODES table")


NODES = _setup_nodes()


def _node_params(executable: str) -> dict:
    module_name, _ = NODES[executable].split(":")
    module = importlib.import_module(module_name)
    return {p.name: p for p in module.PARAMS}


def _launch_facts(path: Path) -> tuple[set[str], list[tuple], list[str]]:
    """Executables named in ``Node(executable=...)``, ``ARGUMENTS`` rows, and node sets the file starts."""
    tree = ast.parse(path.read_text())
    executables = {
        kw.value.value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        for kw in call.keywords
        if kw.arg == "executable" and isinstance(kw.value, ast.Constant)
    }
    arguments: list[tuple] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "ARGUMENTS" for t in node.targets):
            for elt in node.value.elts:
                arguments.append(tuple(getattr(e, "value", getattr(e, "id", None)) for e in elt.elts))
    set_names = [
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and getattr(call.func, "id", getattr(call.func, "attr", None)) == "node_set_launch_description"
        and call.args
        and isinstance(call.args[0], ast.Constant)
    ]
    return executables, arguments, set_names


def _check_argument(where: str, name: str, default, kind: str, declared: dict) -> None:
    """A launch argument overrides a declared parameter of the same type, with the node's default."""
    assert name not in LAUNCH_ONLY_ARGUMENTS and not name.endswith("_params_file"), f"{where}: {name} reserved"
    assert name in declared, f"{where}: launch argument {name!r} is no parameter of the node it is passed to"
    expected = type(declared[name].default).__name__
    assert kind == expected, f"{where}: {name} passed as {kind}, node declares {expected}"
    parse = {"int": int, "float": float, "str": str, "bool": lambda t: {"true": True, "false": False}[t]}
    converted = parse[kind](default)
    assert converted == declared[name].default, f"{where}: default of {name} differs from the node's"


def test_every_node_starts_through_the_launcher():
    from dli_perception.nodes import launcher

    assert set(launcher.NODE_MODULES) == set(NODES)
    for name in NODES:
        assert callable(getattr(launcher, name))


def test_every_node_has_a_console_script_and_main():
    for executable, target in NODES.items():
        module_name, attr = target.split(":")
        main = getattr(importlib.import_module(module_name), attr)
        assert callable(main), executable


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_existing_executables_and_parameters(path):
    from dli_perception.nodes import sets

    executables, arguments, set_names = _launch_facts(path)
    for set_name in set_names:  # launch files built by dli_perception.launch_helpers from a node set
        assert set_name in sets.SETS, f"{path.name} starts unknown node set {set_name!r}"
        assert path.name == f"{set_name}.launch.py", f"{path.name} starts set {set_name!r}: name them alike"
        node_set = sets.SETS[set_name]
        executables |= set(node_set.nodes)
        for arg in node_set.arguments:
            assert arg.node in node_set.nodes, f"{path.name}: {arg.name} goes to {arg.node}, not in the set"
            param = _node_params(arg.node).get(arg.param_name)
            assert param is not None, f"{path.name}: {arg.name} -> {arg.node}, which has no {arg.param_name}"
            text = sets.format_value(param.default)  # the DeclareLaunchArgument default
            kind = type(param.default).__name__
            _check_argument(path.name, arg.param_name, text, kind, _node_params(arg.node))
            assert sets.parse_value(text, param.default, arg.name) == param.default
        names = [a.name for a in node_set.arguments]
        assert len(names) == len(set(names)), f"{path.name}: duplicate launch arguments {names}"
    assert executables, f"{path.name} starts no node"
    assert executables <= set(NODES), f"{path.name} names unknown executables {executables - set(NODES)}"
    declared = {}
    for exe in executables:
        declared.update(_node_params(exe))
    for name, default, kind, *_ in arguments:  # launch files with their own ARGUMENTS table
        _check_argument(path.name, name, default, kind, declared)


def test_every_node_set_has_its_launch_file_and_config_files():
    from dli_perception.nodes import sets

    launched = {name for path in LAUNCH_FILES for name in _launch_facts(path)[2]}
    assert launched == set(sets.SETS), f"sets without a launch file: {set(sets.SETS) - launched}"
    for node_set in sets.SETS.values():
        for node in node_set.nodes:
            path = sets.config_file(node, REPO / "config")
            assert path.is_file(), f"set {node_set.name}: {node} has no {path.name} in config/"
            assert node in yaml.safe_load(path.read_text()), f"{path.name} has no {node} section"


def test_node_classes_are_what_the_entry_points_run():
    """``dli-perception up`` builds the classes of NODE_CLASSES; the console scripts run the same ones."""
    from dli_perception.nodes import sets

    assert set(sets.NODE_CLASSES) == set(NODES)
    for node, target in NODES.items():
        module_name, attr = target.split(":")
        cls = sets.node_class(node)
        assert cls.__module__ == module_name, node
        main = getattr(importlib.import_module(module_name), attr)
        assert cls in [cell.cell_contents for cell in main.__closure__ or ()], f"{target} does not run {cls}"
        assert sets.node_params(node) == _node_params(node)


def _load_launch_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_declares_arguments_and_builds_nodes(path):
    """With launch_ros importable (a robot, /tmp/lv): the real LaunchDescription and its Node actions."""
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (no PyPI wheel): run on a robot")
    from launch.actions import DeclareLaunchArgument
    from launch_ros.utilities import evaluate_parameters

    from dli_perception import launch_helpers
    from dli_perception.nodes import sets
    from launch import LaunchContext

    (set_name,) = _launch_facts(path)[2]
    description = _load_launch_module(path).generate_launch_description()
    declared = {e.name: e for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    expected = launch_helpers.declared_arguments(set_name)
    assert list(declared) == [name for name, _, _ in expected]
    context = LaunchContext()
    for name, default, _ in expected:
        assert "".join(s.perform(context) for s in declared[name].default_value) == default, name
        context.launch_configurations[name] = default
    node_set = sets.SETS[set_name]
    if node_set.arguments:  # one argument changed, the others given their defaults: only the change applies
        changed = node_set.arguments[0]
        param = _node_params(changed.node)[changed.param_name]
        new = {str: "other", int: 17, float: 17.5, bool: not param.default}[type(param.default)]
        context.launch_configurations[changed.name] = sets.format_value(new)
    nodes = launch_helpers._launch_nodes(context, set_name)
    assert [n.node_executable for n in nodes] == list(node_set.nodes)
    for node in nodes:
        params_file, overrides = evaluate_parameters(context, node._Node__parameters)
        defaults = {name: default for name, default, _ in expected}
        assert Path(params_file) == Path(defaults[sets.params_file_argument(node.node_executable)])
        if node_set.arguments and node.node_executable == changed.node:
            assert overrides == {changed.param_name: new}, node.node_executable
            assert type(overrides[changed.param_name]) is type(new)
        else:
            assert overrides == {}, node.node_executable


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_yaml_parameters_are_declared_with_matching_types(path):
    """Every config YAML that is not an action table must be a valid ``<node>: ros__parameters`` file."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data
    for node_name, section in data.items():
        assert node_name in NODES, f"{path.name}: {node_name} is not a node of this package"
        has_params = isinstance(section, dict) and "ros__parameters" in section
        assert has_params, f"{path.name}: {node_name} has no ros__parameters section"
        values = flatten_parameters(section["ros__parameters"])
        declared = _node_params(node_name)
        for key, value in values.items():
            assert key in declared, f"{path.name}: {node_name} does not declare {key!r}"
            default = declared[key].default
            assert type(value) is type(default), f"{path.name}: {key}={value!r} but the node expects {type(default)}"
            assert declared[key].validate(value) is None, declared[key].validate(value)


@pytest.mark.parametrize("path", ACTION_TABLES, ids=lambda p: p.name)
def test_action_tables_load(path):
    """Files with a top-level ``actions:`` are reaction_node action tables and must load as such."""
    from dli_perception.core.action_table import load_action_table

    assert load_action_table(path).actions


def test_shipped_yaml_matches_node_defaults():
    """``<node>.yaml`` documents a node's defaults: a value that differs is a silent behaviour change."""
    for path in PARAM_FILES:
        if f"{path.stem}_node" not in NODES:
            continue  # application configs (e.g. a reaction table) choose their own values
        for node_name, section in yaml.safe_load(path.read_text()).items():
            declared = _node_params(node_name)
            for key, value in flatten_parameters(section["ros__parameters"]).items():
                assert value == declared[key].default, (
                    f"{path.name}: {key}={value!r}, node default {declared[key].default!r}"
                )
