"""The main demo: see → label → learn → classify → react, in one process, no camera, robot or download.

:class:`Demo` starts the package's real nodes in one rclpy context and drives them, through the one
graph client (:class:`~dli_perception.graph_client.Teacher`), along the DLI workflow:

1. ``camera_node`` (synthetic source) shows scenes of a few classes in turn, ``scene_period_s``
   seconds each;
2. ``recorder_node`` collects ``per_class`` images per class: the demo teaches the label of the
   scene on screen and calls ``~/capture`` only well inside a scene; afterwards every saved image's
   stamp is checked against the schedule;
3. ``trainer_node`` fine-tunes ResNet-18 (head mode) on the dataset and exports the model
   directory, then announces it on ``model_updated``;
4. ``classifier_node`` loads it and classifies the live stream; the demo compares each result
   (``~/scores``: label and the source frame's stamp) with the class that was on screen;
5. ``reaction_node``, once enabled, turns the labels into ``cmd_vel``, which drives a
   :class:`SimulatedRobot` (a kinematic unicycle).

How the demo knows what is on screen, honestly: the synthetic source shows
``classes[floor(t / scene_period) % n]`` at ``t`` seconds after it was opened, which happens in
the camera node's constructor. The demo reads the wall clock just before and just after that
constructor, so the opening time is known to within that interval (:class:`SceneSchedule`), and it
never uses a frame (or captures) unless the whole uncertainty, widened by a guard, falls inside one
scene.

Nodes live in the namespace ``config.namespace`` (``/dli_demo``), so nothing drives a real robot
listening on ``/cmd_vel``, and discovery is kept on this host unless the user chose otherwise
(``ROS_AUTOMATIC_DISCOVERY_RANGE``). Node log messages go to ``demo.log`` (through ``/rosout``),
errors also to the console.

The modules: :mod:`.config` (options, outputs, weights, reaction table), :mod:`.schedule` (what is on
screen when), :mod:`.robot` (the simulated robot), :mod:`.nodeset` (the nodes and the graph client),
:mod:`.scoring` (dataset, live and drive checks), :mod:`.story` (output and ``demo.log``) and
:mod:`.scenario` (the five stages). ``--task regression`` runs the XY-target story instead: :mod:`.xy_scene`
(a scene camera showing a target that moves around the robot, with every frame's truth), :mod:`.xy_stages`
and :mod:`.xy_scoring` (target error, tracking error). Nothing here prints: the command
(``dli_perception.commands.demo``) supplies a :class:`DemoOutput`. rclpy is imported only when a demo runs.
"""

from __future__ import annotations

from dli_perception.demo.config import (
    ACTIONS_FILE,
    DATASET_DIR,
    LOG_FILE,
    MARKER_FILE,
    MODEL_DIR,
    OUTPUTS,
    STAGES,
    SUMMARY_FILE,
    DemoConfig,
    action_table_for,
    prepare_out_dir,
    resolve_weights,
)
from dli_perception.demo.robot import Motion, SimulatedRobot, format_pose
from dli_perception.demo.scenario import Demo
from dli_perception.demo.schedule import SceneSchedule
from dli_perception.demo.scoring import SCENE_CHANGE
from dli_perception.demo.stages import Interrupted
from dli_perception.demo.story import DemoOutput, ProgressLike

__all__ = [
    "ACTIONS_FILE",
    "DATASET_DIR",
    "LOG_FILE",
    "MARKER_FILE",
    "MODEL_DIR",
    "OUTPUTS",
    "SCENE_CHANGE",
    "STAGES",
    "SUMMARY_FILE",
    "Demo",
    "DemoConfig",
    "DemoOutput",
    "Interrupted",
    "Motion",
    "ProgressLike",
    "SceneSchedule",
    "SimulatedRobot",
    "action_table_for",
    "format_pose",
    "prepare_out_dir",
    "resolve_weights",
]
