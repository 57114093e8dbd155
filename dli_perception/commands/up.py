"""``dli-perception up SET``: start a node set in ONE process, the same nodes as ``launch/SET.launch.py``.

    dli-perception up classify model_dir:=~/dli_models/default start_enabled:=true
    dli-perception up collect --params my_robot.yaml -p camera_node.fps:=15

All nodes of the set share one rclpy context and one single-threaded executor (through
:func:`dli_perception.nodes.runtime.run_nodes`, so Ctrl-C, a second Ctrl-C and SIGTERM end in
exit code 0 after every node's last duties: the reaction node's zero Twist, flushed files).
Camera frames reach the classifier by a direct in-process hand-off
(:mod:`dli_perception.nodes.localframes`): never serialised, and not published through DDS at all
unless another subscriber wants them; ``--no-local-frames`` sends them through DDS instead.

Parameters, each layer overriding the one before:

1. ``config/<node>.yaml`` of every node (the launch files' default params files);
2. each ``--params FILE`` in order (ROS 2 parameter files: ``<node>: ros__parameters: ...``,
   ``/**`` and namespaced keys included; sections for nodes outside the set are ignored);
3. the set's launch arguments ``NAME:=VALUE`` (the same names as its launch file);
4. ``-p NODE.PARAM:=VALUE`` (``NODE`` with or without ``_node``).

``up demo [OPTIONS]`` runs ``dli-perception demo [OPTIONS]`` (collect, train, classify, react, all
in one process) when that command is installed.

Every value is checked against the node's declared parameters before anything starts: an unknown
name, a wrong type or a refused value ends in one line and exit code 1.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.errors import ConfigError
from dli_perception.nodes import sets


@dataclass
class Plan:
    """What ``up`` starts: the set, each node's checked parameters, where they came from."""

    node_set: sets.NodeSet
    parameters: dict[str, dict[str, Any]]
    sources: list[str] = field(default_factory=list)
    namespace: str = ""
    local_frames: bool = True


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``up`` subcommand."""
    listing = "\n".join(
        f"  {s.name:<9} {s.description}\n            arguments: {', '.join(a.name for a in s.arguments)}"
        for s in sets.SETS.values()
    )
    choices = list(sets.SETS)
    if _has_demo():
        choices.append(DEMO)
        listing += f"\n  {DEMO:<9} the whole story, the same as 'dli-perception demo' (its options follow 'demo')"
    p = sub.add_parser(
        "up",
        help="start a node set (classify, collect, train, camera) in one process",
        description="Start the nodes of SET (the same as launch/SET.launch.py) in one process with one "
        "executor; camera frames go to the classifier in-process. Parameters: config/<node>.yaml, then "
        "--params files, then NAME:=VALUE, then -p NODE.PARAM:=VALUE. Ctrl-C stops it cleanly.",
        epilog=f"node sets:\n{listing}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("set", choices=choices, metavar="SET", help=f"node set: {', '.join(choices)}")
    _add_options(p)
    # Everything after SET: launch arguments and options in any order (parsed again in run()).
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


DEMO = "demo"
"""``up demo`` runs ``dli-perception demo`` (dli_perception/commands/demo.py) with the options after it."""


def _has_demo() -> bool:
    import importlib.util

    return importlib.util.find_spec("dli_perception.commands.demo") is not None


def run_demo(args: argparse.Namespace) -> int:
    """``up demo ...``: parse what follows ``demo`` as ``dli-perception demo`` options and run it."""
    from dli_perception.commands import demo
    from dli_perception.nodes import launcher

    if launcher.EARLY_STOP.is_set():  # stopped while still importing: start nothing
        return demo.EXIT_CODES["interrupted"]
    if args.assignments or args.params or args.param or args.namespace or args.no_local_frames or args.dry_run:
        raise ConfigError("'up demo' takes only the demo's own options, after 'demo' (see dli-perception demo --help)")
    parser = argparse.ArgumentParser(prog="dli-perception up")
    demo.register(parser.add_subparsers())
    demo_args = parser.parse_args([DEMO, *args.rest])
    demo_args.verbose = getattr(args, "verbose", False)
    return demo_args.func(demo_args)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("assignments", nargs="*", metavar="NAME:=VALUE", help="launch arguments of the set (see below)")
    p.add_argument(
        "--params",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="ROS 2 YAML parameter file applied after config/<node>.yaml (repeatable; later files win)",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        dest="param",
        metavar="NODE.PARAM:=VALUE",
        help="set one parameter of one node, e.g. camera_node.fps:=15 (repeatable; applied last)",
    )
    p.add_argument("--namespace", default=None, help="namespace of every node (default: none)")
    p.add_argument(
        "--no-local-frames",
        action="store_true",
        help="send frames between the nodes through DDS, as separate processes would (for comparison)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the nodes and parameters as YAML and exit")


def _combined(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with what followed SET (launch arguments and options, intermixed) parsed and added."""
    rest = argparse.ArgumentParser(
        prog=f"dli-perception up {args.set}",
        epilog=_arguments_help(sets.node_set(args.set)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(rest)
    more = rest.parse_intermixed_args(args.rest)
    return argparse.Namespace(
        set=args.set,
        assignments=[*args.assignments, *more.assignments],
        params=[*args.params, *more.params],
        param=[*args.param, *more.param],
        namespace=more.namespace if more.namespace is not None else (args.namespace or ""),
        no_local_frames=args.no_local_frames or more.no_local_frames,
        dry_run=args.dry_run or more.dry_run,
    )


def _arguments_help(node_set: sets.NodeSet) -> str:
    """The set's NAME:=VALUE arguments with the parameter each sets, its default and description."""
    lines = [f"{node_set.name}: {node_set.description}", "arguments (NAME:=VALUE):"]
    for arg in node_set.arguments:
        param = sets.node_params(arg.node)[arg.param_name]
        assignment = f"{arg.name}:={sets.format_value(param.default) or chr(39) * 2}"
        lines.append(f"  {assignment:<28} {arg.node}.{arg.param_name}")
        lines.append(f"      {param.description}")
    return "\n".join(lines) + "\n"


def _split(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise ConfigError(f"{text!r} is not {what}:=VALUE")
    return name, value


def _node_of(node_set: sets.NodeSet, name: str) -> str:
    for node in (name, f"{name}_node"):
        if node in node_set.nodes:
            return node
    raise ConfigError(f"{name!r} is not a node of set {node_set.name!r} (its nodes: {', '.join(node_set.nodes)})")


def parse_param_overrides(node_set: sets.NodeSet, items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``-p NODE.PARAM:=VALUE`` items as ``{node: {param: value}}`` (values typed by the node's PARAMS)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, text = _split(item, "NODE.PARAM")
        node_name, dot, param = target.partition(".")
        if not dot or not param:
            raise ConfigError(f"{item!r}: name the node and the parameter, e.g. camera_node.fps:=15")
        node = _node_of(node_set, node_name)
        declared = sets.node_params(node).get(param)
        if declared is not None:
            value = sets.parse_value(text, declared.default, item)
        else:  # not ours (use_sim_time, qos_overrides...) or a typo: checked_parameters decides
            value = yaml.safe_load(text) if text else ""
        out.setdefault(node, {})[param] = value
    return out


def build_plan(
    set_name: str,
    params_files: Sequence[Path] = (),
    assignments: Sequence[str] = (),
    param_overrides: Sequence[str] = (),
    *,
    namespace: str = "",
    local_frames: bool = True,
    config_dir: Path | None = None,
) -> Plan:
    """Resolve and check every node's parameters (see the module docstring for the order).

    Raises ConfigError for an unknown set, node, argument or parameter, a wrong type, a refused
    value, an unreadable file or an invalid namespace.
    """
    node_set = sets.node_set(set_name)
    layers: list[Mapping[str, Mapping[str, Any]]] = []
    sources: list[str] = []
    for node in node_set.nodes:
        path = sets.config_file(node, config_dir)
        layers.append(sets.load_params_file(path, [node]))
        sources.append(str(path))
    for path in params_files:
        layers.append(sets.load_params_file(Path(path), node_set.nodes))
        sources.append(str(path))
    texts = dict(_split(a, "NAME") for a in assignments)
    if texts:
        layers.append(sets.argument_overrides(node_set, texts, only_changed=False))
        sources.append(" ".join(assignments))
    if param_overrides:
        layers.append(parse_param_overrides(node_set, param_overrides))
        sources.append(" ".join(f"-p {p}" for p in param_overrides))
    merged = sets.merge(*layers)
    parameters = {node: sets.checked_parameters(node, merged.get(node, {})) for node in node_set.nodes}
    return Plan(node_set, parameters, sources, _namespace(namespace), local_frames)


def _namespace(namespace: str) -> str:
    if not namespace:
        return ""
    ns = namespace if namespace.startswith("/") else f"/{namespace}"
    from rclpy.exceptions import InvalidNamespaceException
    from rclpy.validate_namespace import validate_namespace

    try:
        validate_namespace(ns)
    except InvalidNamespaceException as exc:
        reason = str(exc).splitlines()[0].removeprefix("Invalid namespace: ").rstrip(":")
        raise ConfigError(f"invalid namespace {namespace!r}: {reason}") from None
    return ns


def ros_parameters(node: str, values: Mapping[str, Any]) -> list:
    """rclpy ``Parameter`` objects for ``parameter_overrides`` (an empty list keeps the declared type)."""
    from rclpy.parameter import Parameter

    declared = sets.node_params(node)
    out = []
    for name, value in values.items():
        model = value
        if isinstance(value, list) and not value and name in declared and declared[name].default:
            model = declared[name].default
        out.append(Parameter(name, Parameter.Type.from_parameter_value(model), value))
    return out


def start(plan: Plan) -> int:
    """Run the plan's nodes until SIGINT/SIGTERM; returns the exit code of :func:`run_nodes`."""
    from dli_perception.nodes import localframes
    from dli_perception.nodes.runtime import run_nodes

    extra = {"namespace": plan.namespace} if plan.namespace else {}
    factories = [
        functools.partial(
            sets.node_class(node), parameter_overrides=ros_parameters(node, plan.parameters[node]), **extra
        )
        for node in plan.node_set.nodes
    ]
    if plan.local_frames:
        localframes.enable()
    try:
        return run_nodes(factories, args=["dli-perception"])
    finally:
        localframes.disable()


def as_yaml(plan: Plan) -> str:
    """The plan's parameters as one ROS 2 parameter file (what ``--dry-run`` prints)."""
    import yaml

    prefix = plan.namespace.rstrip("/") + "/" if plan.namespace else ""
    data = {f"{prefix}{node}": {"ros__parameters": plan.parameters[node]} for node in plan.node_set.nodes}
    return yaml.safe_dump(data, sort_keys=False)


def run(args: argparse.Namespace) -> int:
    if args.set == DEMO:
        return run_demo(args)
    args = _combined(args)
    plan = build_plan(
        args.set,
        args.params,
        args.assignments,
        args.param,
        namespace=args.namespace,
        local_frames=not args.no_local_frames,
    )
    if args.dry_run:
        print(as_yaml(plan), end="")
        return 0
    nodes = plan.node_set.nodes
    pairs = [f"{a} -> {b}" for a, b in sets.FRAME_HAND_OFFS if a in nodes and b in nodes]
    frames = f" (frames {', '.join(pairs)}: {'in-process' if plan.local_frames else 'DDS'})" if pairs else ""
    print(
        f"dli-perception up {plan.node_set.name}: {', '.join(nodes)} in one process{frames}; "
        f"parameters from {', '.join(plan.sources)}. Ctrl-C stops.",
        flush=True,
    )
    return start(plan)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dli_perception.commands.up SET ...`` (the same as ``dli-perception up SET ...``).

    Like ``dli-perception up``, it records a Ctrl-C or SIGTERM from its first line on (before the node
    modules are imported and started), so a stop at any moment of the start ends in exit code 0.
    """
    from dli_perception.commands import run_alone

    return run_alone("up", register, argv)


if __name__ == "__main__":
    sys.exit(main())
