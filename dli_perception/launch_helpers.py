"""Launch descriptions of the node sets in :mod:`dli_perception.nodes.sets` (for ``launch/*.launch.py``).

Every launch file of the package is ``node_set_launch_description("<set>")``, so the launch files
and ``dli-perception up`` start the same nodes with the same YAML files. Each description declares:

* ``namespace`` (pushed onto every node), ``fastdds_profile`` (``FASTDDS_DEFAULT_PROFILES_FILE``);
* ``<short>_params_file`` per node, default ``config/<short>.yaml`` in the package share;
* the set's parameter arguments (``source``, ``model_dir``, ...), whose defaults, types and
  descriptions are the nodes' own. An argument overrides the params file only when its value
  differs from the node's default, so a custom params file is not silently overridden by
  arguments nobody gave.

launch and launch_ros are imported inside the functions: nothing else in the package needs them.
"""

from __future__ import annotations

import os
from typing import Any

from dli_perception.nodes import sets


def _share() -> str:
    """The package share: the ament index (colcon install), else the source tree or the venv prefix."""
    from dli_perception import transport

    return str(transport.share_dir())


def declared_arguments(set_name: str, share: str | None = None) -> list[tuple[str, str, str]]:
    """``(name, default, description)`` of every launch argument of the set's launch file."""
    node_set = sets.node_set(set_name)
    share = share or _share()
    out = [
        ("namespace", "", "Namespace pushed onto every node of the set."),
        (
            "fastdds_profile",
            os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.path.join(share, "config", "fastdds_shm.xml"),
            "Fast DDS XML profile (shared-memory transport sized for camera frames).",
        ),
    ]
    for node in node_set.nodes:
        out.append(
            (
                sets.params_file_argument(node),
                str(sets.config_file(node, os.path.join(share, "config"))),
                f"YAML parameter file of {node}.",
            )
        )
    for arg in node_set.arguments:
        param = sets.node_params(arg.node)[arg.param_name]
        out.append(
            (
                arg.name,
                sets.format_value(param.default),
                f"{param.description} ({arg.node} parameter {arg.param_name}; overrides "
                f"{sets.params_file_argument(arg.node)} when not the default)",
            )
        )
    return out


def node_set_launch_description(set_name: str) -> Any:
    """The ``LaunchDescription`` that starts node set ``set_name`` (see the module docstring)."""
    from launch.actions import DeclareLaunchArgument, GroupAction, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import PushRosNamespace

    from launch import LaunchDescription

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in declared_arguments(set_name)
    ]
    return LaunchDescription(
        [
            *declared,
            SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
            GroupAction(
                [
                    PushRosNamespace(LaunchConfiguration("namespace")),
                    OpaqueFunction(function=_launch_nodes, args=[set_name]),
                ]
            ),
        ]
    )


def _launch_nodes(context: Any, set_name: str) -> list:
    """The set's ``Node`` actions, with the argument values resolved in ``context``."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    node_set = sets.node_set(set_name)
    texts = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in node_set.arguments}
    overrides = sets.argument_overrides(node_set, texts, only_changed=True)
    return [
        Node(
            package=sets.PACKAGE,
            executable=node,
            name=node,
            parameters=[
                LaunchConfiguration(sets.params_file_argument(node)),
                # typed values: launch_ros would otherwise read the string "0" as an integer
                {name: ParameterValue(value, value_type=type(value)) for name, value in overrides[node].items()},
            ],
            output="screen",
            emulate_tty=True,
        )
        for node in node_set.nodes
    ]
