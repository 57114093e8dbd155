"""From labels to velocity commands: an action table and a safety-first reaction policy.

The action table (YAML: label -> velocities) is read and checked by
:mod:`dli_perception.core.action_table`.

:class:`ReactionPolicy` is the state machine between labels and commands. It
is pure: the caller passes ``now`` (seconds, any monotonic clock) to every call,
so tests drive it with exact times. Rules, in order of precedence:

1. disabled → zero (``reason="disabled"``);
2. no label yet → zero (``"no-label"``); no label for ``stale_timeout_s`` → zero (``"stale"``);
3. the unknown label (or an empty one) → zero (``"unknown"``) unless the table maps it;
4. ``min_score`` > 0 and the label's score is missing or below it: the label counts as the unknown
   label, so zero (``"low-score"``) unless the table maps the unknown label to a motion, which then
   applies (the next label with a high enough score moves the robot again);
5. an unmapped label whose ``default`` is stop → zero (``"unmapped"``);
   a stop action → zero (``"stop-action"``);
6. an action with ``duration_s`` that has run that long → zero (``"duration-elapsed"``);
7. otherwise the action's velocities, clipped to ``max_linear``/``max_angular`` (``"moving"``).

Velocity limits: table values above the limits are **clipped** (with a logged
warning), not refused, because the limits are run-time parameters and lowering
one must not invalidate a table that was valid a moment ago.

Ramp: ``max_linear_accel``/``max_angular_accel`` limit how fast the *speed*
(absolute velocity) of each axis grows between successive :meth:`ReactionPolicy.command`
calls. Slowing down is never limited, and every stop is immediate: a ramp that
delayed a stop on staleness, disable or ``unknown`` would defeat the watchdog
(the drive controller has its own deceleration limits if smoothing is wanted).
A reversal of direction drops to zero at once and then ramps up the other way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from dli_perception.core.action_table import ActionTable, finite_number
from dli_perception.errors import ConfigError

log = logging.getLogger(__name__)

# Why the policy sends what it sends (Command.reason).
DISABLED = "disabled"
NO_LABEL = "no-label"
STALE = "stale"
UNKNOWN = "unknown"
LOW_SCORE = "low-score"
UNMAPPED = "unmapped"
STOP_ACTION = "stop-action"
DURATION_ELAPSED = "duration-elapsed"
MOVING = "moving"
REASONS = (DISABLED, NO_LABEL, STALE, UNKNOWN, LOW_SCORE, UNMAPPED, STOP_ACTION, DURATION_ELAPSED, MOVING)


@dataclass(frozen=True)
class PolicyConfig:
    """Safety limits of :class:`ReactionPolicy`.

    ``stale_timeout_s`` (s, > 0; 0.5 = the diff_drive_controller cmd_vel timeout); ``max_linear``
    (m/s) and ``max_angular`` (rad/s), ≥ 0; ``max_linear_accel`` (m/s²) and ``max_angular_accel``
    (rad/s²), ≥ 0, where 0 means no ramp; ``min_score`` in [0, 1], 0 = off; ``max_step_s`` (s, > 0):
    the longest gap between two commands the ramp credits, so a caller that paused cannot jump to
    full speed in one step (set it to about two command periods).
    """

    stale_timeout_s: float = 0.5
    max_linear: float = 0.3
    max_angular: float = 2.0
    max_linear_accel: float = 0.5
    max_angular_accel: float = 4.0
    min_score: float = 0.0
    max_step_s: float = 0.1

    def __post_init__(self) -> None:
        for name in ("stale_timeout_s", "max_step_s"):
            value = finite_number(getattr(self, name), name)
            if value <= 0.0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")
        for name in ("max_linear", "max_angular", "max_linear_accel", "max_angular_accel"):
            if finite_number(getattr(self, name), name) < 0.0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= finite_number(self.min_score, "min_score") <= 1.0:
            raise ConfigError(f"min_score must be in [0, 1], got {self.min_score!r}")


@dataclass(frozen=True)
class Command:
    """One velocity command (``linear_x`` m/s, ``angular_z`` rad/s), why it is what it is, and the label."""

    linear_x: float = 0.0
    angular_z: float = 0.0
    reason: str = NO_LABEL
    label: str | None = None

    @property
    def is_zero(self) -> bool:
        return self.linear_x == 0.0 and self.angular_z == 0.0


class SafePolicy:
    """The safety half every policy shares: the enable gate, the stale count and the acceleration ramp.

    A policy subclasses it and gives :meth:`target` (the command its rules ask for at a time, before the
    ramp, changing no state) and a ``counters`` object with ``stale_events``. :meth:`command` then applies
    the same ramp and stop rules to every policy. Clock injected, not thread-safe.
    """

    counters: Any

    def __init__(self, config: PolicyConfig | None, *, enabled: bool, idle_reason: str) -> None:
        self.enabled = enabled
        self._config = config or PolicyConfig()
        self._last = Command(reason=DISABLED if not enabled else idle_reason)
        self._last_time: float | None = None

    @property
    def config(self) -> PolicyConfig:
        return self._config

    def set_config(self, config: PolicyConfig | None = None, **changes: Any) -> PolicyConfig:
        """Replace the config, or change some fields (``set_config(max_linear=0.2)``); returns the new one."""
        self._config = replace(config or self._config, **changes)
        self._config_changed()
        return self._config

    def _config_changed(self) -> None:
        """Called after :meth:`set_config`; a policy that checks its settings against the config overrides it."""

    def set_enabled(self, enabled: bool) -> None:
        """Gate all motion; disabling makes the next command zero."""
        self.enabled = bool(enabled)

    @property
    def last_command(self) -> Command:
        return self._last

    def target(self, now: float) -> Command:
        """The command the rules ask for at ``now``, before the ramp; changes no state."""
        raise NotImplementedError

    def command(self, now: float) -> Command:
        """The command to send at ``now``: :meth:`target` with the acceleration ramp applied.

        Stops are immediate; only growing speed is limited, by ``accel * dt`` per axis where ``dt``
        is the time since the previous call, capped at ``max_step_s``. Call it at a steady rate.
        """
        target = self.target(now)
        cfg = self._config
        if target.reason != MOVING:
            out = target
        else:
            dt = 0.0 if self._last_time is None else min(max(now - self._last_time, 0.0), cfg.max_step_s)
            out = replace(
                target,
                linear_x=ramp(self._last.linear_x, target.linear_x, cfg.max_linear_accel, dt),
                angular_z=ramp(self._last.angular_z, target.angular_z, cfg.max_angular_accel, dt),
            )
        if out.reason == STALE and self._last.reason != STALE:
            self.counters.stale_events += 1
        self._last = out
        self._last_time = now
        return out


@dataclass
class _LabelState:
    label: str
    score: float | None
    last_s: float  # when the label was last received
    since_s: float  # when this label episode began (label changed or the stream resumed after a gap)


@dataclass
class _Counters:
    labels_received: int = 0
    stale_events: int = 0


class ReactionPolicy(SafePolicy):
    """Labels in (:meth:`on_label`), velocity commands out (:meth:`command`); clock injected, not thread-safe.

    Starts disabled unless ``enabled=True``. See the module docstring for the rules.
    """

    def __init__(self, table: ActionTable, config: PolicyConfig | None = None, *, enabled: bool = False) -> None:
        super().__init__(config, enabled=enabled, idle_reason=NO_LABEL)
        self._table = table
        self._label: _LabelState | None = None
        self.counters = _Counters()
        self._config_changed()

    # -- configuration ----------------------------------------------------------------------------
    @property
    def table(self) -> ActionTable:
        return self._table

    def _config_changed(self) -> None:
        """Warn of table actions the config's limits will clip."""
        cfg = self._config
        entries = [*self._table.actions.items(), ("<default>", self._table.default)]
        for name, action in entries:
            if abs(action.linear_x) > cfg.max_linear:
                log.warning(
                    "action %r asks linear_x=%g m/s, above max_linear=%g: it will be clipped",
                    name,
                    action.linear_x,
                    cfg.max_linear,
                )
            if abs(action.angular_z) > cfg.max_angular:
                log.warning(
                    "action %r asks angular_z=%g rad/s, above max_angular=%g: it will be clipped",
                    name,
                    action.angular_z,
                    cfg.max_angular,
                )

    # -- input ------------------------------------------------------------------------------------
    def on_label(self, label: str, now: float, score: float | None = None) -> None:
        """Record a received label (``now`` in seconds). The same label again keeps its episode going."""
        previous = self._label
        new_episode = (
            previous is None or previous.label != label or now - previous.last_s >= self._config.stale_timeout_s
        )
        since = now if new_episode or previous is None else previous.since_s
        self._label = _LabelState(label=label, score=score, last_s=now, since_s=since)
        self.counters.labels_received += 1

    @property
    def label(self) -> str | None:
        """The last label received (even when stale), or None."""
        return None if self._label is None else self._label.label

    def label_age(self, now: float) -> float | None:
        """Seconds since the last label, or None before the first."""
        return None if self._label is None else now - self._label.last_s

    def deadline(self) -> float | None:
        """When the current label stops the robot by time alone, or None (no label yet).

        That is the stale deadline (last label + ``stale_timeout_s``), or the end of the current
        action's ``duration_s`` when that comes first. A caller arms a timer for it, so the stop is
        sent at that moment and not at its next periodic command.
        """
        state = self._label
        if state is None:
            return None
        at = state.last_s + self._config.stale_timeout_s
        action, found = self._table.lookup(state.label)
        if found != "unknown" and action.duration_s is not None:
            at = min(at, state.since_s + action.duration_s)
        return at

    # -- output -----------------------------------------------------------------------------------
    def target(self, now: float) -> Command:
        """The command the rules ask for at ``now``, before the ramp; changes no state."""
        state = self._label
        label = None if state is None else state.label
        if not self.enabled:
            return Command(reason=DISABLED, label=label)
        if state is None:
            return Command(reason=NO_LABEL)
        cfg = self._config
        if now - state.last_s >= cfg.stale_timeout_s:
            return Command(reason=STALE, label=label)
        action, found = self._table.lookup(state.label)
        if found == "unknown":
            return Command(reason=UNKNOWN, label=label)
        if cfg.min_score > 0.0 and (state.score is None or state.score < cfg.min_score):
            action, found = self._table.lookup(self._table.unknown_label)  # not sure: as the unknown label
            if not action.moves:
                return Command(reason=LOW_SCORE, label=label)
        if not action.moves:
            return Command(reason=UNMAPPED if found == "unmapped" else STOP_ACTION, label=label)
        if action.duration_s is not None and now - state.since_s >= action.duration_s:
            return Command(reason=DURATION_ELAPSED, label=label)
        return Command(
            linear_x=clip(action.linear_x, cfg.max_linear),
            angular_z=clip(action.angular_z, cfg.max_angular),
            reason=MOVING,
            label=label,
        )


def clip(value: float, limit: float) -> float:
    """``value`` limited to ``[-limit, limit]``."""
    return max(-limit, min(limit, value))


def ramp(previous: float, target: float, accel: float, dt: float) -> float:
    """One axis: speed grows by at most ``accel * dt``; slowing down and stopping are immediate."""
    if accel <= 0.0:
        return target
    if previous * target < 0.0:
        previous = 0.0  # reversing: drop to zero at once, then ramp the other way
    if abs(target) <= abs(previous):
        return target
    step = accel * dt
    return min(target, previous + step) if target > previous else max(target, previous - step)
