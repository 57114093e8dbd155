"""Following an XY target: the steering policy of road following, with the reaction policy's safety rules.

A regression model gives a target point (x, y) in the image, normalised to [-1, 1] (centre 0, x right,
y down; see :mod:`dli_perception.core.tasks`). The camera looks ahead of a robot driving forward, so the
bottom edge of the image is just in front of the robot and the top edge far ahead. From the point the
policy takes the **target angle** (radians, 0 straight ahead, positive when the target is to the right)::

    forward = (1 - y) / 2                  # 0 at the bottom edge, 0.5 at the centre, 1 at the top edge
    angle   = atan2(x, forward)

A point at the centre line is straight ahead (angle 0) wherever it is; the same sideways offset
gives a sharper angle the nearer the point is to the bottom edge (the robot), up to +-90 degrees on it.
Points slightly outside [-1, 1] (an unbounded regression head) are clamped onto the image.

The command, as the JetBot road-following controller computes it but in ROS units and signs::

    turn      = kp * angle + kd * (angle - previous angle)   # rad/s; the D term acts per target update
    angular_z = clip(bias - turn, max_steer)                   # + is counter-clockwise (a left turn)
    linear_x  = speed                                          # m/s, forward

so a target to the right (angle > 0) turns the robot clockwise, towards it. ``bias`` (rad/s) is
added to every command: a robot that drifts one way is trimmed with it. The D term damps a
swinging target: it is the change of angle since the previous target, 0 for the first target after a
stop (no target yet, stale, disabled or a bad point), so a target coming back after a gap starts on
P alone. The result is clipped to ``max_steer`` and then to the reaction policy's ``max_angular``;
``linear_x`` to ``max_linear``.

:class:`SteeringPolicy` has the same clock-injected shape and the same rules of safety as
:class:`~dli_perception.core.reaction.ReactionPolicy`, from :class:`~dli_perception.core.reaction.PolicyConfig`:

1. disabled → zero (``"disabled"``);
2. no target yet → zero (``"no-target"``); none for ``stale_timeout_s`` → zero (``"stale"``);
3. the last point was not finite (NaN, inf) → zero (``"bad-target"``) until a good one arrives;
4. otherwise the steering command (``"moving"``), its growth ramped by ``max_linear_accel`` and
   ``max_angular_accel``; every stop is immediate.

``min_score`` does not apply (a point has no score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from dli_perception.core.reaction import DISABLED, MOVING, STALE, Command, PolicyConfig, SafePolicy, clip
from dli_perception.errors import ConfigError

NO_TARGET = "no-target"
BAD_TARGET = "bad-target"
STEER_REASONS = (DISABLED, NO_TARGET, STALE, BAD_TARGET, MOVING)
"""Why the steering policy sends what it sends (Command.reason)."""


def target_angle(x: float, y: float) -> float:
    """The angle (radians, 0 ahead, + right) of image point (x, y) in [-1, 1] (clamped onto the image)."""
    x = min(1.0, max(-1.0, float(x)))
    y = min(1.0, max(-1.0, float(y)))
    return math.atan2(x, (1.0 - y) / 2.0)


@dataclass(frozen=True)
class SteeringConfig:
    """Gains of :class:`SteeringPolicy`.

    ``speed`` forward (m/s, >= 0); ``kp`` (rad/s per radian of target angle, >= 0); ``kd`` (rad/s per
    radian the angle changed since the previous target, >= 0); ``bias`` (rad/s added to angular.z,
    + counter-clockwise); ``max_steer`` (rad/s, >= 0): the largest |angular.z| the steering asks for.
    """

    speed: float = 0.15
    kp: float = 2.0
    kd: float = 0.2
    bias: float = 0.0
    max_steer: float = 1.5

    def __post_init__(self) -> None:
        for name in ("speed", "kp", "kd", "bias", "max_steer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"steering {name} must be a finite number, got {value!r}")
        for name in ("speed", "kp", "kd", "max_steer"):
            if getattr(self, name) < 0.0:
                raise ConfigError(f"steering {name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class _Target:
    x: float
    y: float
    angle: float  # radians; NaN for a bad point
    change: float  # angle minus the previous target's angle (0 after a stop)
    last_s: float  # when it was received


@dataclass
class SteerCounters:
    """``labels_received`` counts targets (the reaction node's diagnostics read one name for both policies)."""

    labels_received: int = 0
    stale_events: int = 0
    bad_targets: int = 0


class SteeringPolicy(SafePolicy):
    """Targets in (:meth:`on_target`), velocity commands out (:meth:`command`); clock injected, not thread-safe.

    Starts disabled unless ``enabled=True``. See the module docstring for the geometry and the rules; the
    enable gate, the ramp and the stale count are :class:`~dli_perception.core.reaction.SafePolicy`'s.
    """

    def __init__(
        self, steering: SteeringConfig | None = None, config: PolicyConfig | None = None, *, enabled: bool = False
    ) -> None:
        super().__init__(config, enabled=enabled, idle_reason=NO_TARGET)
        self._steering = steering or SteeringConfig()
        self._target: _Target | None = None
        self.counters = SteerCounters()

    # -- configuration ----------------------------------------------------------------------------
    @property
    def steering(self) -> SteeringConfig:
        return self._steering

    def set_steering(self, steering: SteeringConfig | None = None, **changes: Any) -> SteeringConfig:
        """Replace the gains, or change some (``set_steering(kp=1.5)``); returns the new ones."""
        self._steering = replace(steering or self._steering, **changes)
        return self._steering

    # -- input ------------------------------------------------------------------------------------
    def on_target(self, x: float, y: float, now: float) -> None:
        """Record a received target point (normalised image coordinates) at ``now`` (seconds)."""
        self.counters.labels_received += 1
        if not (math.isfinite(x) and math.isfinite(y)):
            self.counters.bad_targets += 1
            self._target = _Target(x, y, math.nan, 0.0, now)
            return
        angle = target_angle(x, y)
        previous = self._target
        resumed = (
            previous is None
            or math.isnan(previous.angle)
            or now - previous.last_s >= self._config.stale_timeout_s
            or self._last.reason != MOVING
        )
        change = 0.0 if resumed else angle - previous.angle
        self._target = _Target(float(x), float(y), angle, change, now)

    @property
    def label(self) -> None:
        """Always None: a target is a point, not a label (the table policy's field, for one node interface)."""
        return None

    @property
    def target_point(self) -> tuple[float, float] | None:
        """The last target received (even when stale), or None."""
        return None if self._target is None else (self._target.x, self._target.y)

    def label_age(self, now: float) -> float | None:
        """Seconds since the last target, or None before the first."""
        return None if self._target is None else now - self._target.last_s

    def deadline(self) -> float | None:
        """When the current target goes stale (the caller's watchdog fires then), or None before the first."""
        return None if self._target is None else self._target.last_s + self._config.stale_timeout_s

    # -- output -----------------------------------------------------------------------------------
    def target(self, now: float) -> Command:
        """The command the rules ask for at ``now``, before the ramp; changes no state."""
        t = self._target
        if not self.enabled:
            return Command(reason=DISABLED)
        if t is None:
            return Command(reason=NO_TARGET)
        cfg, gains = self._config, self._steering
        if now - t.last_s >= cfg.stale_timeout_s:
            return Command(reason=STALE)
        if math.isnan(t.angle):
            return Command(reason=BAD_TARGET)
        turn = gains.kp * t.angle + gains.kd * t.change
        angular = clip(clip(gains.bias - turn, gains.max_steer), cfg.max_angular)
        return Command(linear_x=clip(gains.speed, cfg.max_linear), angular_z=angular, reason=MOVING)
