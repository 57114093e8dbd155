"""reaction_node's parameters: one table drives the descriptors, validation, launch arguments and README.

``policy`` picks what drives the robot: ``table`` (class labels through an action table,
:mod:`dli_perception.core.action_table`) or ``steer`` (XY targets through the steering policy,
:mod:`dli_perception.core.steering`); the ``steer_*`` parameters are that policy's gains.
"""

from __future__ import annotations

from dli_perception.nodes.params import Param

POLICIES = ("table", "steer")

PARAMS = [
    Param(
        "policy",
        "table",
        "What drives the robot: table = the classifier's labels through the action table; steer = the "
        "regression model's XY targets on `xy` (geometry_msgs/PointStamped), followed like road following.",
        choices=POLICIES,
        read_only=True,
    ),
    Param(
        "actions_file",
        "",
        "Action table YAML (label -> velocities); a bare name is looked up in the "
        "package's config/ folder; empty: the built-in collision-avoidance table (free -> forward, "
        "blocked -> turn).",
        read_only=True,
    ),
    Param(
        "start_enabled",
        False,
        "Allow motion from start-up; false: call ~/enable (SetBool) first.",
        read_only=True,
    ),
    Param(
        "stale_timeout_s",
        0.5,
        "Stop when no label (steer: no target) arrived for this long, seconds (0.5 = diff_drive_controller's "
        "cmd_vel timeout).",
        min=0.01,
        max=10.0,
    ),
    Param(
        "max_linear",
        0.3,
        "Largest |linear.x| sent, m/s; table values above it are clipped.",
        min=0.0,
        max=10.0,
    ),
    Param(
        "max_angular",
        2.0,
        "Largest |angular.z| sent, rad/s; table values above it are clipped.",
        min=0.0,
        max=20.0,
    ),
    Param(
        "max_linear_accel",
        0.5,
        "Largest growth of |linear.x|, m/s^2; 0: no ramp. Stopping is never ramped.",
        min=0.0,
        max=100.0,
    ),
    Param(
        "max_angular_accel",
        4.0,
        "Largest growth of |angular.z|, rad/s^2; 0: no ramp. Stopping is never ramped.",
        min=0.0,
        max=200.0,
    ),
    Param("rate_hz", 20.0, "cmd_vel publishing rate, Hz.", min=1.0, max=200.0, read_only=True),
    Param(
        "min_score",
        0.0,
        "Treat a result whose score is below this as the unknown label (stop, unless the table maps the "
        "unknown label), 0-1; 0: off. Scores come from the classifier's ~/scores (or JSON label messages); "
        "a plain label has none and stops when this is > 0.",
        min=0.0,
        max=1.0,
    ),
    Param(
        "classifier",
        "classifier_node",
        "Classifier node whose <classifier>/scores (stamped, scored results) drive the robot and whose "
        "latched <classifier>/classes are checked against the action table (steer: must be x, y) "
        "(relative: a namespace moves it); empty: plain labels on `label` only.",
        read_only=True,
    ),
    Param(
        "max_frame_age_s",
        0.0,
        "Ignore a result (scores, or steer: an xy point, by its header stamp) whose source image is older "
        "than this by this node's clock (then the robot stops as stale), seconds; 0: off (camera and robot "
        "clocks may differ).",
        min=0.0,
        max=10.0,
    ),
    Param(
        "stamped",
        False,
        "Publish geometry_msgs/TwistStamped (ros2_control diff_drive_controller on Jazzy and later) instead of Twist.",
        read_only=True,
    ),
]

POLICY_PARAMS = (
    "stale_timeout_s",
    "max_linear",
    "max_angular",
    "max_linear_accel",
    "max_angular_accel",
    "min_score",
)

STEER_PARAMS = [
    Param(
        "steer_speed",
        0.15,
        "steer: forward speed while a target is fresh, m/s (then clipped to max_linear).",
        min=0.0,
        max=10.0,
    ),
    Param(
        "steer_kp",
        2.0,
        "steer: P gain, rad/s of angular.z per radian of target angle (angle = atan2(x, (1 - y) / 2), "
        "0 ahead, + right).",
        min=0.0,
        max=100.0,
    ),
    Param(
        "steer_kd",
        0.2,
        "steer: D gain, rad/s per radian the target angle changed since the previous target (damps a "
        "swinging target; 0 after every stop).",
        min=0.0,
        max=100.0,
    ),
    Param(
        "steer_bias",
        0.0,
        "steer: added to every angular.z, rad/s (+ = counter-clockwise): trims a robot that drifts to one side.",
        min=-5.0,
        max=5.0,
    ),
    Param(
        "steer_max_angular",
        1.5,
        "steer: largest |angular.z| the steering asks for, rad/s (then clipped to max_angular).",
        min=0.0,
        max=20.0,
    ),
]

STEER_FIELDS = {
    "steer_speed": "speed",
    "steer_kp": "kp",
    "steer_kd": "kd",
    "steer_bias": "bias",
    "steer_max_angular": "max_steer",
}
"""steer_* parameter -> :class:`~dli_perception.core.steering.SteeringConfig` field."""

PARAMS += STEER_PARAMS
