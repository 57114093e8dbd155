"""Start camera_node (image_raw, camera_info) with config/camera.yaml and the shared-memory Fast DDS profile.

    ros2 launch dli_perception camera.launch.py source:=v4l2 device:=/dev/video0

Arguments (with defaults and descriptions): ``ros2 launch dli_perception camera.launch.py --show-args``.
The node set is defined once in dli_perception/nodes/sets.py, shared with ``dli-perception up camera``.
"""

from dli_perception.launch_helpers import node_set_launch_description


def generate_launch_description():
    return node_set_launch_description("camera")
