"""The teach station: every node of the teach set, plus the web page that drives them.

    ros2 launch dli_perception teach.launch.py
    # then open http://127.0.0.1:8080 (the page's address is printed)

The nodes are the ``teach`` set of dli_perception/nodes/sets.py (camera, recorder, trainer,
classifier, reaction; ``dli-perception up teach`` starts the same); the page runs as its own
process (``python -m dli_perception.teach --connect``, the same as ``dli-perception teach --connect``),
a client of the nodes over their topics and services.
For the page on another address (it then needs the printed token), run that command yourself with
``--host``. Arguments: ``ros2 launch dli_perception teach.launch.py --show-args``.
"""

import sys

from dli_perception.launch_helpers import node_set_launch_description


def generate_launch_description():
    from launch.actions import ExecuteProcess
    from launch.substitutions import LaunchConfiguration

    description = node_set_launch_description("teach")
    description.add_action(
        ExecuteProcess(
            cmd=[
                sys.executable,
                "-m",
                "dli_perception.teach",  # installs its stop handlers before importing anything heavy
                "--connect",
                "--namespace",
                LaunchConfiguration("namespace"),
            ],
            name="teach_station",
            output="screen",
        )
    )
    return description
