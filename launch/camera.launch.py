"""Start camera_node with the shipped parameters and the shared-memory Fast DDS profile.

    ros2 launch dli_perception camera.launch.py source:=v4l2 device:=/dev/video0
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.parameter_descriptions import ParameterValue

SHARE = get_package_share_directory("dli_perception")

# (name, default, type, description): each overrides the value from params_file.
ARGUMENTS = [
    ("source", "synthetic", str, "Frame source: synthetic, v4l2, gstreamer, csi, video or folder."),
    ("device", "0", str, "V4L2 device index or path (source:=v4l2)."),
    ("path", "", str, "Video file or image folder (source:=video / folder)."),
    ("width", "640", int, "Image width, pixels."),
    ("height", "480", int, "Image height, pixels."),
    ("fps", "30.0", float, "Frames per second."),
]


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node."),
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(SHARE, "config", "camera.yaml"),
            description="YAML parameter file for camera_node.",
        ),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE", default_value=os.path.join(SHARE, "config", "fastdds_shm.xml")
            ),
            description="Fast DDS XML profile (shared-memory transport sized for camera frames).",
        ),
    ] + [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, _, desc in ARGUMENTS]
    overrides = {name: ParameterValue(LaunchConfiguration(name), value_type=kind) for name, _, kind, _ in ARGUMENTS}
    camera = Node(
        package="dli_perception",
        executable="camera_node",
        name="camera_node",
        parameters=[LaunchConfiguration("params_file"), overrides],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription(
        args
        + [
            SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
            GroupAction([PushRosNamespace(LaunchConfiguration("namespace")), camera]),
        ]
    )
