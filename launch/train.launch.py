"""Train on the robot: trainer_node (idle until ~/train), with config/trainer.yaml.

    ros2 launch dli_perception train.launch.py dataset_dir:=~/dli_datasets/thumbs \
        model_dir:=~/dli_models/thumbs
    ros2 service call /trainer_node/train std_srvs/srv/Trigger

Arguments (with defaults and descriptions): ``ros2 launch dli_perception train.launch.py --show-args``.
The node set is defined once in dli_perception/nodes/sets.py, shared with ``dli-perception up train``.
"""

from dli_perception.launch_helpers import node_set_launch_description


def generate_launch_description():
    return node_set_launch_description("train")
