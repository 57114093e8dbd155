"""The regression demo's scene: a target that moves around the robot, seen by a camera on the robot.

The world, seen from above: the target is at a **bearing** that sweeps to and fro,
``TargetMotion.bearing(t)`` (radians, counter-clockwise from the robot's starting heading, like
:class:`~dli_perception.demo.robot.SimulatedRobot`'s ``theta``), and at a distance that comes and goes.
The camera looks along the robot's heading with a horizontal field of view of ``FOV_DEG``; the
target's **relative bearing** ``rel = wrap(bearing - theta)`` is what the robot must turn to face it.
In the image (normalised, centre 0, x right, y down; :mod:`dli_perception.core.tasks`)::

    x = clamp(tan(-rel) / tan(FOV / 2), -1, 1)       # a target to the robot's left (rel > 0) is at x < 0
    y = TargetMotion.y(t)                              # lower in the image = nearer the robot

a target behind the robot's field of view stays drawn at the image edge on its side, so the robot
still knows which way to turn. :class:`SceneCamera` renders that frame
(:meth:`~dli_perception.core.synthetic.TargetScenes.render_xy`: a red dot on a textured background),
publishes it on ``image_raw`` and remembers the true target of every frame by its stamp: the
demo's ground truth, exact (it drew the frame). In ``hold`` mode it shows a fixed point instead,
which the collect stage teaches and captures.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FOV_DEG = 90.0
"""Horizontal field of view of the demo robot's camera, degrees."""
TRUTH_FRAMES = 4000
"""How many frames' truth :class:`SceneCamera` keeps (about 4 minutes at 15 fps)."""


@dataclass(frozen=True)
class TargetMotion:
    """Where the target is ``t`` seconds after the motion started: a slow sweep of the bearing (radians,
    amplitude ``sweep_rad``, period ``period_s``) and a distance that sets the image row ``y``."""

    sweep_rad: float = 0.7
    period_s: float = 8.0
    y_centre: float = 0.2
    y_amplitude: float = 0.35
    y_period_s: float = 11.0

    def bearing(self, t: float) -> float:
        return self.sweep_rad * math.sin(2.0 * math.pi * t / self.period_s)

    def y(self, t: float) -> float:
        return self.y_centre + self.y_amplitude * math.sin(2.0 * math.pi * t / self.y_period_s)


def image_x(relative_bearing: float, fov_deg: float = FOV_DEG) -> float:
    """The image column (normalised, + right) of a target at ``relative_bearing`` (rad, + left), clamped."""
    rel = math.remainder(relative_bearing, math.tau)
    if abs(rel) >= math.pi / 2:
        return -1.0 if rel > 0 else 1.0
    return max(-1.0, min(1.0, math.tan(-rel) / math.tan(math.radians(fov_deg) / 2.0)))


@dataclass(frozen=True)
class FrameTruth:
    """What a frame showed: the target (normalised ``x``, ``y``), its relative bearing (rad, + left; None in
    hold mode) and the robot's heading (rad) when it was drawn."""

    x: float
    y: float
    relative_bearing: float | None = None
    heading: float = 0.0


class SceneCamera:
    """Publishes the demo scene on ``image_raw`` at ``fps`` (a node of its own) and keeps every frame's truth.

    ``pose(t)`` gives the robot's ``(x, y, theta)`` at wall-clock time ``t`` (s); in ``follow`` mode the
    target is drawn where the robot sees it, in ``hold`` mode at the point given to :meth:`hold`.
    """

    def __init__(
        self,
        context,
        namespace: str,
        width: int,
        height: int,
        fps: float,
        seed: int,
        pose: Callable[[float], tuple[float, float, float]],
        motion: TargetMotion | None = None,
    ) -> None:
        from rclpy.node import Node
        from sensor_msgs.msg import Image

        from dli_perception.core.synthetic_targets import TargetScenes
        from dli_perception.nodes.qos import SENSOR_DATA

        self.scenes = TargetScenes(width, height, seed=seed)
        self.motion = motion or TargetMotion()
        self._pose = pose
        self._lock = threading.Lock()
        self._truth: OrderedDict[int, FrameTruth] = OrderedDict()
        self._held: tuple[float, float] | None = (0.0, 0.0)
        self._held_since = 0  # frames published since the last hold()
        self._t0 = time.time()
        self.frames = 0
        extra = {"namespace": namespace} if namespace else {}
        self.node = Node("scene_camera", context=context, **extra)
        self.publisher = self.node.create_publisher(Image, "image_raw", SENSOR_DATA)
        self.timer = self.node.create_timer(1.0 / fps, self._publish)

    # -- modes ------------------------------------------------------------------------------------
    def hold(self, x: float, y: float) -> None:
        """Show the target at ``(x, y)`` from the next frame on, until :meth:`follow`."""
        with self._lock:
            self._held = (float(x), float(y))
            self._held_since = 0

    def frames_since_hold(self) -> int:
        with self._lock:
            return self._held_since

    def follow(self) -> None:
        """Show the moving target where the robot sees it; its motion starts now."""
        with self._lock:
            self._held = None
            self._t0 = time.time()

    def motion_time(self, t: float) -> float:
        """Seconds of target motion at wall-clock time ``t``."""
        return t - self._t0

    # -- truth ------------------------------------------------------------------------------------
    def truth(self, stamp_ns: int) -> FrameTruth | None:
        """What the frame stamped ``stamp_ns`` showed; None for a frame this camera did not publish (or forgot)."""
        with self._lock:
            return self._truth.get(int(stamp_ns))

    def view(self, t: float) -> FrameTruth:
        """The target as the robot sees it at wall-clock time ``t`` (follow mode's frame content)."""
        heading = self._pose(t)[2]
        motion_t = self.motion_time(t)
        rel = math.remainder(self.motion.bearing(motion_t) - heading, math.tau)
        y = max(-1.0, min(1.0, self.motion.y(motion_t)))
        return FrameTruth(image_x(rel), y, rel, heading)

    def _publish(self) -> None:
        from dli_perception.core.imaging import cv2_to_imgmsg

        now_ns = time.time_ns()
        with self._lock:
            held = self._held
        truth = FrameTruth(*held) if held is not None else self.view(now_ns / 1e9)
        image = self.scenes.render_xy(truth.x, truth.y, index=self.frames)
        msg = cv2_to_imgmsg(image, encoding="rgb8")
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
        msg.header.frame_id = "demo_camera"
        with self._lock:
            self._truth[now_ns] = truth
            while len(self._truth) > TRUTH_FRAMES:
                self._truth.popitem(last=False)
            if held is not None and held == self._held:
                self._held_since += 1
        self.frames += 1
        self.publisher.publish(msg)

    def destroy(self) -> None:
        self.node.destroy_timer(self.timer)
        self.node.destroy_node()
