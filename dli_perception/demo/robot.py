"""The simulated robot the demo drives: a kinematic unicycle, and the motion it made per scene."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Motion:
    """Motion accumulated while one class was on screen: seconds, path length (m), rotation (rad)."""

    seconds: float = 0.0
    distance_m: float = 0.0
    rotation_rad: float = 0.0
    commands: int = 0

    def to_dict(self) -> dict[str, Any]:
        s = self.seconds
        return {
            "seconds": round(s, 3),
            "distance_m": round(self.distance_m, 4),
            "rotation_rad": round(self.rotation_rad, 4),
            "rotation_deg": round(math.degrees(self.rotation_rad), 2),
            "mean_speed_m_s": round(self.distance_m / s, 4) if s > 0 else 0.0,
            "mean_turn_rate_rad_s": round(self.rotation_rad / s, 4) if s > 0 else 0.0,
            "commands": self.commands,
        }


class SimulatedRobot:
    """A kinematic unicycle (a differential-drive robot seen from above) driven by ``cmd_vel``.

    The pose is ``x``, ``y`` (m) and ``theta`` (rad, counter-clockwise from +x). Each command
    (``linear.x`` m/s, ``angular.z`` rad/s) is held until the next one, but for at most
    ``timeout_s`` (like diff_drive_controller's ``cmd_vel_timeout``), after which the robot stops.
    Motion is integrated exactly along arcs. Thread-safe.
    """

    def __init__(self, timeout_s: float = 0.5) -> None:
        self.timeout_s = float(timeout_s)
        self.x = 0.0
        self.y = 0.0
        self.theta = 0.0
        self.linear = 0.0
        self.angular = 0.0
        self.commands = 0
        self._since: float | None = None  # time of the current command
        self._until: float | None = None  # time integrated up to
        self._lock = threading.Lock()

    def command(self, linear: float, angular: float, t: float) -> tuple[float, float, float]:
        """Apply a command received at ``t`` (s, any monotonic clock); returns the motion since the last call
        as ``(seconds, distance_m, rotation_rad)``."""
        with self._lock:
            moved = self._advance(t)
            self.linear, self.angular = float(linear), float(angular)
            self._since = t
            self.commands += 1
            return moved

    def advance(self, t: float) -> tuple[float, float, float]:
        """Integrate up to ``t`` without a new command; returns ``(seconds, distance_m, rotation_rad)``."""
        with self._lock:
            return self._advance(t)

    def _advance(self, t: float) -> tuple[float, float, float]:
        start = self._until
        self._until = t if start is None else max(start, t)
        if start is None or self._since is None or t <= start:
            return (0.0, 0.0, 0.0)
        end = min(t, self._since + self.timeout_s)  # a command is not held past the timeout
        dt = max(0.0, end - start)
        v, w = self.linear, self.angular
        if dt > 0 and (v or w):
            theta = self.theta
            if abs(w) < 1e-9:
                self.x += v * dt * math.cos(theta)
                self.y += v * dt * math.sin(theta)
            else:
                self.x += v / w * (math.sin(theta + w * dt) - math.sin(theta))
                self.y -= v / w * (math.cos(theta + w * dt) - math.cos(theta))
            self.theta = math.remainder(theta + w * dt, math.tau)
        return (t - start, abs(v) * dt, abs(w) * dt)

    def pose(self) -> tuple[float, float, float]:
        """``(x m, y m, theta rad)``."""
        with self._lock:
            return (self.x, self.y, self.theta)


def format_pose(pose: tuple[float, float, float]) -> str:
    x, y, theta = pose
    return f"x {x:+.2f} m, y {y:+.2f} m, heading {math.degrees(theta):+.0f} deg"
