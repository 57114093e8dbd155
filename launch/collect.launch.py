"""Collect a dataset: camera_node + recorder_node, with config/camera.yaml and config/recorder.yaml.

    ros2 launch dli_perception collect.launch.py dataset_dir:=~/dli_datasets/thumbs
    ros2 topic pub --once /teach_label std_msgs/msg/String "{data: thumbs_up}"
    ros2 service call /recorder_node/capture std_srvs/srv/Trigger

Arguments (with defaults and descriptions): ``ros2 launch dli_perception collect.launch.py --show-args``.
The node set is defined once in dli_perception/nodes/sets.py, shared with ``dli-perception up collect``.
"""

from dli_perception.launch_helpers import node_set_launch_description


def generate_launch_description():
    return node_set_launch_description("collect")
