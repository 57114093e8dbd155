"""Launch files and YAML parameter files agree with what the nodes declare.

launch/launch_ros are not installable from PyPI, so these checks read the launch files'
source (AST) and the YAML files and compare every executable, launch argument and
parameter key against setup.py's console scripts and each node's declared parameters.
When launch_ros is importable (a robot, or a scratch env), test_launch_runs.py runs them for real.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

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


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _launch_facts(path: Path) -> tuple[set[str], list[tuple]]:
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
    return executables, arguments


def test_every_node_has_a_console_script_and_main():
    for executable, target in NODES.items():
        module_name, attr = target.split(":")
        main = getattr(importlib.import_module(module_name), attr)
        assert callable(main), executable


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_existing_executables_and_parameters(path):
    executables, arguments = _launch_facts(path)
    assert executables, f"{path.name} starts no node"
    assert executables <= set(NODES), f"{path.name} names unknown executables {executables - set(NODES)}"
    declared = {}
    for exe in executables:
        declared.update(_node_params(exe))
    for name, default, kind, *_ in arguments:
        assert name not in LAUNCH_ONLY_ARGUMENTS
        assert name in declared, f"{path.name}: launch argument {name!r} is not a parameter of {executables}"
        expected = type(declared[name].default).__name__
        assert kind == expected, f"{path.name}: {name} passed as {kind}, node declares {expected}"
        converted = {"int": int, "float": float, "str": str}[kind](default)
        assert converted == declared[name].default, f"{path.name}: default of {name} differs from the node's"


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_yaml_parameters_are_declared_with_matching_types(path):
    """Every config YAML that is not an action table must be a valid ``<node>: ros__parameters`` file."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data
    for node_name, section in data.items():
        assert node_name in NODES, f"{path.name}: {node_name} is not a node of this package"
        has_params = isinstance(section, dict) and "ros__parameters" in section
        assert has_params, f"{path.name}: {node_name} has no ros__parameters section"
        values = _flatten(section["ros__parameters"])
        declared = _node_params(node_name)
        for key, value in values.items():
            assert key in declared, f"{path.name}: {node_name} does not declare {key!r}"
            default = declared[key].default
            assert type(value) is type(default), f"{path.name}: {key}={value!r} but the node expects {type(default)}"
            assert declared[key].validate(value) is None, declared[key].validate(value)


@pytest.mark.parametrize("path", ACTION_TABLES, ids=lambda p: p.name)
def test_action_tables_load(path):
    """Files with a top-level ``actions:`` are reaction_node action tables and must load as such."""
    from dli_perception.core.reaction import load_action_table

    assert load_action_table(path).actions


def test_shipped_yaml_matches_node_defaults():
    """``<node>.yaml`` documents a node's defaults: a value that differs is a silent behaviour change."""
    for path in PARAM_FILES:
        if f"{path.stem}_node" not in NODES:
            continue  # application configs (e.g. a reaction table) choose their own values
        for node_name, section in yaml.safe_load(path.read_text()).items():
            declared = _node_params(node_name)
            for key, value in _flatten(section["ros__parameters"]).items():
                assert value == declared[key].default, f"{path.name}: {key}={value!r}, node default {declared[key].default!r}"
