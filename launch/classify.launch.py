"""Classify and react: camera_node + classifier_node + reaction_node, with their config/*.yaml files.

    ros2 launch dli_perception classify.launch.py model_dir:=~/dli_models/thumbs \
        actions_file:=reaction_thumbs.yaml
    ros2 service call /reaction_node/enable std_srvs/srv/SetBool "{data: true}"

With model_dir empty (the default) the classifier waits for a model directory on model_updated
(trainer_node publishes one after each run). Motion starts disabled unless start_enabled:=true.
Arguments (with defaults and descriptions): ``ros2 launch dli_perception classify.launch.py --show-args``.
The node set is defined once in dli_perception/nodes/sets.py, shared with ``dli-perception up classify``.
"""

from dli_perception.launch_helpers import node_set_launch_description


def generate_launch_description():
    return node_set_launch_description("classify")
