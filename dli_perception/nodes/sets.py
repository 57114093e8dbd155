"""The node sets that the launch files and ``dli-perception up`` start: one definition for both.

A set names its nodes in start order (executable = node name = console script), and the
launch arguments that override single parameters. Every node reads ``config/<short>.yaml``
(``camera_node`` -> ``camera.yaml``) first. Types, defaults and descriptions of launch arguments
come from the nodes' own ``PARAMS`` tables, so they cannot drift from what the nodes declare.

Nothing here imports rclpy or launch at module level: a node's ``PARAMS`` and class are
imported when asked for (:func:`node_params`, :func:`node_class`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dli_perception.errors import ConfigError

PACKAGE = "dli_perception"

NODE_CLASSES = {
    "camera_node": "dli_perception.nodes.camera_node:CameraNode",
    "recorder_node": "dli_perception.nodes.recorder_node:RecorderNode",
    "trainer_node": "dli_perception.nodes.trainer_node:TrainerNode",
    "classifier_node": "dli_perception.nodes.classifier_node:ClassifierNode",
    "reaction_node": "dli_perception.nodes.reaction_node:ReactionNode",
}
"""Node name -> ``module:Class``; each module's ``main`` runs that class (setup.py's NODES)."""

FRAME_HAND_OFFS = (("camera_node", "classifier_node"),)
"""(publisher, subscriber) nodes whose ``image_raw`` frames go by in-process hand-off when both run in
one process under ``dli-perception up`` (nodes/localframes.py); other subscribers use ROS."""

LAUNCH_ONLY_ARGUMENTS = ("namespace", "fastdds_profile")
"""Launch arguments that are no node parameter (besides one ``<short>_params_file`` per node)."""


@dataclass(frozen=True)
class Argument:
    """A launch argument (``name:=value``) that overrides ``parameter`` of ``node``."""

    name: str
    node: str
    parameter: str = ""
    also: tuple[str, ...] = ()
    """Other nodes whose parameter of the same name gets the same value (one dataset for two nodes)."""

    @property
    def param_name(self) -> str:
        return self.parameter or self.name


@dataclass(frozen=True)
class NodeSet:
    """Nodes started together (in this order) and the launch arguments they take."""

    name: str
    description: str
    nodes: tuple[str, ...]
    arguments: tuple[Argument, ...] = ()

    def argument(self, name: str) -> Argument:
        for arg in self.arguments:
            if arg.name == name:
                return arg
        known = ", ".join(a.name for a in self.arguments) or "none"
        raise ConfigError(f"set {self.name!r} has no argument {name!r}; its arguments: {known}")


_CAMERA = tuple(Argument(name, "camera_node") for name in ("source", "device", "path", "width", "height", "fps"))

SETS: dict[str, NodeSet] = {
    s.name: s
    for s in (
        NodeSet("camera", "camera_node alone: image_raw and camera_info.", ("camera_node",), _CAMERA),
        NodeSet(
            "collect",
            "camera_node + recorder_node: label and save frames into a dataset.",
            ("camera_node", "recorder_node"),
            _CAMERA + (Argument("dataset_dir", "recorder_node"),),
        ),
        NodeSet(
            "train",
            "trainer_node, idle until ~/train: fine-tunes on dataset_dir and exports to model_dir.",
            ("trainer_node",),
            tuple(Argument(name, "trainer_node") for name in ("dataset_dir", "model_dir", "mode", "epochs", "weights")),
        ),
        NodeSet(
            "teach",
            "every node the teach station (dli-perception teach) drives: camera, recorder, trainer, "
            "classifier and reaction, one dataset for recorder and trainer.",
            ("camera_node", "recorder_node", "trainer_node", "classifier_node", "reaction_node"),
            _CAMERA
            + (
                Argument("dataset_dir", "recorder_node", also=("trainer_node",)),
                Argument("model_dir", "trainer_node"),
                Argument("mode", "trainer_node"),
                Argument("epochs", "trainer_node"),
                Argument("weights", "trainer_node"),
                Argument("backend", "classifier_node"),
                Argument("actions_file", "reaction_node"),
            ),
        ),
        NodeSet(
            # The camera comes first: in one process the classifier takes its frames in-process
            # (nodes/localframes.py) only when the camera already exists.
            "classify",
            "camera_node + classifier_node + reaction_node: label the live stream and drive on cmd_vel.",
            ("camera_node", "classifier_node", "reaction_node"),
            _CAMERA
            + (
                Argument("model_dir", "classifier_node"),
                Argument("backend", "classifier_node"),
                Argument("actions_file", "reaction_node"),
                Argument("start_enabled", "reaction_node"),
                Argument("policy", "reaction_node"),
            ),
        ),
    )
}


def node_set(name: str) -> NodeSet:
    """The set called ``name``; ConfigError naming the sets there are."""
    try:
        return SETS[name]
    except KeyError:
        raise ConfigError(f"no node set {name!r}; choose one of {', '.join(SETS)}") from None


def short_name(node: str) -> str:
    """``camera_node`` -> ``camera``: the stem of the node's config file and params-file argument."""
    return node.removesuffix("_node")


def params_file_argument(node: str) -> str:
    """Name of the launch argument that chooses ``node``'s YAML parameter file."""
    return f"{short_name(node)}_params_file"


def config_file(node: str, config_dir: Path | None = None) -> Path:
    """``config/<short>.yaml`` of ``node`` in ``config_dir`` (default: the package's config folder)."""
    if config_dir is None:
        from dli_perception import transport

        config_dir = transport.config_dir()
    return Path(config_dir) / f"{short_name(node)}.yaml"


def _target(node: str) -> tuple[str, str]:
    try:
        module, attr = NODE_CLASSES[node].split(":")
    except KeyError:
        raise ConfigError(f"{node!r} is not a node of {PACKAGE}; nodes: {', '.join(NODE_CLASSES)}") from None
    return module, attr


def node_params(node: str) -> dict[str, Any]:
    """``{name: Param}`` that ``node`` declares (imports its module, hence rclpy)."""
    module, _ = _target(node)
    return {p.name: p for p in importlib.import_module(module).PARAMS}


def node_class(node: str) -> type:
    """The rclpy Node subclass of ``node`` (imports its module)."""
    module, attr = _target(node)
    return getattr(importlib.import_module(module), attr)


# -- parameter values --------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), type(value).__name__
    )


def coerce(value: Any, default: Any, where: str) -> Any:
    """``value`` as the type of the parameter whose default is ``default``; ConfigError when it cannot be.

    Integers are accepted for floating-point parameters (``fps: 30``); nothing else is converted,
    so a string parameter given ``0`` is refused with advice to quote it.
    """
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
        if ok and default and value:
            value = [coerce(v, default[0], f"{where}[{i}]") for i, v in enumerate(value)]
    else:
        ok = type(value) is type(default)
    if not ok:
        hint = " (quote it in YAML: '\"...\"')" if isinstance(default, str) else ""
        raise ConfigError(f"{where}: expected {_kind(default)}, got {value!r}{hint}")
    return value


def parse_value(text: str, default: Any, where: str) -> Any:
    """A command-line value (``name:=text``) as the parameter's type: strings verbatim, others as YAML."""
    if isinstance(default, str):
        return text
    if isinstance(default, float):
        try:
            return float(text)  # also "1e-3", which YAML 1.1 reads as a string
        except ValueError:
            pass
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: cannot read {text!r}: {exc}") from None
    return coerce(value, default, where)


def format_value(value: Any) -> str:
    """The launch-argument text that :func:`parse_value` reads back as ``value`` (no lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value) if not isinstance(value, float) else repr(value)
    raise ConfigError(f"{value!r}: only booleans, numbers and strings can be launch arguments")


def argument_overrides(
    node_set_: NodeSet, values: Mapping[str, str], *, only_changed: bool
) -> dict[str, dict[str, Any]]:
    """``{node: {parameter: value}}`` from launch-argument texts ``{argument name: text}``.

    ``only_changed`` (launch files, where every argument has a value) keeps only values that
    differ from the node's default, so a params file's value stays in force unless the argument
    changes it. Unknown argument names raise ConfigError.
    """
    out: dict[str, dict[str, Any]] = {node: {} for node in node_set_.nodes}
    params = {node: node_params(node) for node in {a.node for a in node_set_.arguments}}
    for name, text in values.items():
        arg = node_set_.argument(name)
        param = params[arg.node][arg.param_name]
        value = parse_value(text, param.default, f"{name}:={text}")
        if only_changed and value == param.default and type(value) is type(param.default):
            continue
        for node in (arg.node, *arg.also):
            out[node][arg.param_name] = value
    return out


# -- YAML parameter files ----------------------------------------------------------------------------

WILDCARDS = ("/**", "**")


def flatten_parameters(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested ``ros__parameters`` mapping -> ``{"group.name": value}`` as ROS 2 declares them."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_parameters(value, name + "."))
        else:
            out[name] = value
    return out


def _section_node(key: str, nodes: Iterable[str]) -> list[str]:
    """Nodes of ``nodes`` a YAML top-level key applies to (``camera_node``, ``/ns/camera_node``, ``/**``)."""
    if key in WILDCARDS:
        return list(nodes)
    name = key.rstrip("/").rsplit("/", 1)[-1]
    return [n for n in nodes if n == name]


def load_params_file(path: Path, nodes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{node: {flattened parameter: value}}`` of a ROS 2 YAML parameter file, for ``nodes`` only.

    Sections for other nodes are ignored (one file may serve several sets). Raises ConfigError
    for a missing or unreadable file or one without ``<node>: ros__parameters:`` sections.
    """
    import yaml

    nodes = list(nodes)
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read parameter file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "ros__parameters" in v for v in data.values()):
        raise ConfigError(
            f"{path} is not a ROS 2 parameter file: expected '<node_name>: ros__parameters: ...' sections"
        )
    out: dict[str, dict[str, Any]] = {}
    for key, section in data.items():
        values = flatten_parameters(section["ros__parameters"] or {})
        for node in _section_node(str(key), nodes):
            out.setdefault(node, {}).update(values)
    return out


def merge(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-node parameter dicts merged in order (later layers win)."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for node, values in layer.items():
            out.setdefault(node, {}).update(values)
    return out


EXTERNAL_PARAMETERS = ("use_sim_time",)
EXTERNAL_PREFIXES = ("qos_overrides.",)


def checked_parameters(node: str, values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` for ``node`` checked against its PARAMS: known names, right types, valid values.

    Raises ConfigError naming the parameter (with a close match) so a typo never goes unnoticed.
    """
    import difflib

    declared = node_params(node)
    out: dict[str, Any] = {}
    for name, value in values.items():
        label = f"{where}{node}.{name}"
        if name in EXTERNAL_PARAMETERS or name.startswith(EXTERNAL_PREFIXES):
            out[name] = value
            continue
        param = declared.get(name)
        if param is None:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{label}: {node} has no parameter {name!r}{hint}")
        value = coerce(value, param.default, label)
        reason = param.validate(value)
        if reason:
            raise ConfigError(f"{label}: {reason}")
        out[name] = value
    return out
