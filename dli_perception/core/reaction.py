"""From labels to velocity commands: an action table and a safety-first reaction policy.

An **action table** (YAML) maps each class name to what the robot does while
that label is current::

    actions:
      free:    {linear_x: 0.15}                 # m/s forward
      blocked: {angular_z: 1.0}                 # rad/s, turn in place
      bump:    {linear_x: -0.1, duration_s: 1}  # back up for 1 s, then stop
      person:  stop                             # same as {stop: true}
    default: stop        # labels not in ``actions`` (optional; stop when absent)
    unknown_label: unknown  # the classifier's "not sure" label (optional)

The unknown label always stops unless ``actions`` names it explicitly; the
``default`` action never applies to it.

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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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

ACTION_KEYS = ("linear_x", "angular_z", "duration_s", "stop")
TABLE_KEYS = ("actions", "default", "unknown_label", "description")


@dataclass(frozen=True)
class Action:
    """What to do while a label is current: velocities (m/s, rad/s), optionally for ``duration_s`` seconds."""

    linear_x: float = 0.0
    angular_z: float = 0.0
    duration_s: float | None = None
    stop: bool = False

    @property
    def moves(self) -> bool:
        """True when this action asks for any motion."""
        return not self.stop and (self.linear_x != 0.0 or self.angular_z != 0.0)


STOP = Action(stop=True)


@dataclass(frozen=True)
class ActionTable:
    """Label → :class:`Action`, with the action for unmapped labels and the name of the unknown label."""

    actions: Mapping[str, Action]
    default: Action = STOP
    unknown_label: str = "unknown"

    def lookup(self, label: str) -> tuple[Action, str]:
        """The action for ``label`` and how it was found: ``"mapped"``, ``"unknown"`` or ``"unmapped"``.

        The unknown label (and the empty string) stops unless ``actions`` names it; ``default``
        applies to every other label missing from ``actions``.
        """
        if label in self.actions:
            return self.actions[label], "mapped"
        if label == self.unknown_label or not label:
            return STOP, "unknown"
        return self.default, "unmapped"

    def to_dict(self) -> dict[str, Any]:
        """The table in its YAML form (round-trips through :func:`load_action_table`)."""
        return {
            "actions": {name: _action_to_yaml(a) for name, a in self.actions.items()},
            "default": _action_to_yaml(self.default),
            "unknown_label": self.unknown_label,
        }


def _action_to_yaml(action: Action) -> Any:
    if action.stop:
        return "stop"
    out: dict[str, Any] = {"linear_x": action.linear_x, "angular_z": action.angular_z}
    if action.duration_s is not None:
        out["duration_s"] = action.duration_s
    return out


COLLISION_AVOIDANCE: dict[str, Any] = {
    "description": "JetBot-style collision avoidance: drive forward while free, turn in place while blocked.",
    "actions": {
        "free": {"linear_x": 0.15, "angular_z": 0.0},
        "blocked": {"linear_x": 0.0, "angular_z": 1.0},
    },
    "default": "stop",
    "unknown_label": "unknown",
}
"""The built-in table (the same as ``config/reaction_collision_avoidance.yaml``)."""


def load_action_table(source: str | Path | Mapping[str, Any]) -> ActionTable:
    """Read an action table from a YAML file path or an already-parsed mapping.

    Raises :class:`ConfigError` naming the file and the offending entry: missing file,
    bad YAML, unknown keys, non-numeric or non-finite values, a non-positive duration,
    ``stop`` mixed with velocities, or a label that YAML did not read as a string.
    """
    where = "action table"
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise ConfigError(
                f"action table {path} not found: give an existing YAML file "
                "(see config/reaction_collision_avoidance.yaml for the format)"
            )
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return _parse_table(data, where)


def _parse_table(data: Any, where: str) -> ActionTable:
    if not isinstance(data, Mapping) or "actions" not in data:
        hint = ""
        if isinstance(data, Mapping) and any(isinstance(v, Mapping) and "ros__parameters" in v for v in data.values()):
            hint = " (this looks like a ROS parameter file; pass it with --params-file, not as actions_file)"
        raise ConfigError(f"{where}: an action table needs a top-level 'actions:' mapping of label -> action{hint}")
    unknown_keys = sorted(str(k) for k in data if k not in TABLE_KEYS)
    if unknown_keys:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown_keys}; allowed: {list(TABLE_KEYS)}")
    actions_data = data["actions"]
    if not isinstance(actions_data, Mapping) or not actions_data:
        raise ConfigError(f"{where}: 'actions' must be a non-empty mapping of label -> action")
    actions: dict[str, Action] = {}
    for label, spec in actions_data.items():
        if not isinstance(label, str) or not label:
            raise ConfigError(
                f"{where}: label {label!r} was read as {type(label).__name__}, not a class name; "
                "quote it in the YAML (e.g. 'on': or '1':)"
            )
        actions[label] = _parse_action(spec, f"{where}: actions.{label}")
    default = _parse_action(data.get("default", "stop"), f"{where}: default")
    unknown_label = data.get("unknown_label", "unknown")
    if not isinstance(unknown_label, str) or not unknown_label:
        raise ConfigError(f"{where}: unknown_label must be a non-empty string, got {unknown_label!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    return ActionTable(actions=actions, default=default, unknown_label=unknown_label)


def _parse_action(spec: Any, where: str) -> Action:
    if spec == "stop":
        return STOP
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected 'stop' or a mapping with {list(ACTION_KEYS)}, got {spec!r}")
    unknown_keys = sorted(str(k) for k in spec if k not in ACTION_KEYS)
    if unknown_keys:
        raise ConfigError(f"{where}: unknown key(s) {unknown_keys}; allowed: {list(ACTION_KEYS)}")
    stop = spec.get("stop", False)
    if not isinstance(stop, bool):
        raise ConfigError(f"{where}: stop must be true or false, got {stop!r}")
    values = {
        key: _number(spec[key], f"{where}.{key}") for key in ("linear_x", "angular_z", "duration_s") if key in spec
    }
    if stop:
        if any(values.get(k, 0.0) != 0.0 for k in ("linear_x", "angular_z")) or "duration_s" in values:
            raise ConfigError(f"{where}: 'stop: true' cannot be combined with velocities or duration_s")
        return STOP
    if not values.keys() & {"linear_x", "angular_z"}:
        raise ConfigError(f"{where}: give linear_x (m/s) and/or angular_z (rad/s), or write 'stop'")
    duration = values.get("duration_s")
    if duration is not None and duration <= 0.0:
        raise ConfigError(f"{where}.duration_s must be > 0 seconds (leave it out to hold while the label lasts)")
    return Action(linear_x=values.get("linear_x", 0.0), angular_z=values.get("angular_z", 0.0), duration_s=duration)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    return float(value)


def class_table_mismatch(classes: Sequence[str], table: ActionTable) -> str:
    """What a model's ``classes`` and an action table do not share, as one warning; "" when they fit.

    The table's unknown label is no class of a model (the classifier's "not sure"), so it is left out.
    """
    names = [a for a in table.actions if a != table.unknown_label]
    no_action = [c for c in classes if c not in table.actions]
    no_class = [a for a in names if a not in classes]
    if not no_action and not no_class:
        return ""
    default = "stop" if not table.default.moves else "the default action"
    parts = []
    if no_action:
        parts.append(f"classes with no action: {', '.join(no_action)} (they get {default})")
    if no_class:
        parts.append(f"actions for classes the model doesn't have: {', '.join(no_class)}")
    shared = len(classes) - len(no_action)
    head = (
        "the model's classes and the action table share no names"
        if shared == 0
        else f"the model's classes and the action table share only some names ({shared} of the model's "
        f"{len(classes)} classes have an action)"
    )
    return f"{head}: {'; '.join(parts)}"


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
            value = _number(getattr(self, name), name)
            if value <= 0.0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value!r}")
        for name in ("max_linear", "max_angular", "max_linear_accel", "max_angular_accel"):
            if _number(getattr(self, name), name) < 0.0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= _number(self.min_score, "min_score") <= 1.0:
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


class ReactionPolicy:
    """Labels in (:meth:`on_label`), velocity commands out (:meth:`command`); clock injected, not thread-safe.

    Starts disabled unless ``enabled=True``. See the module docstring for the rules.
    """

    def __init__(self, table: ActionTable, config: PolicyConfig | None = None, *, enabled: bool = False) -> None:
        self.enabled = enabled
        self._table = table
        self._config = config or PolicyConfig()
        self._label: _LabelState | None = None
        self._last = Command(reason=DISABLED if not enabled else NO_LABEL)
        self._last_time: float | None = None
        self.counters = _Counters()
        self._warn_clipping()

    # -- configuration ----------------------------------------------------------------------------
    @property
    def table(self) -> ActionTable:
        return self._table

    @property
    def config(self) -> PolicyConfig:
        return self._config

    def set_config(self, config: PolicyConfig | None = None, **changes: Any) -> PolicyConfig:
        """Replace the config, or change some fields (``set_config(max_linear=0.2)``); returns the new one."""
        self._config = replace(config or self._config, **changes)
        self._warn_clipping()
        return self._config

    def set_enabled(self, enabled: bool) -> None:
        """Gate all motion; disabling makes the next command zero."""
        self.enabled = bool(enabled)

    def _warn_clipping(self) -> None:
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

    @property
    def last_command(self) -> Command:
        return self._last

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
            linear_x=_clip(action.linear_x, cfg.max_linear),
            angular_z=_clip(action.angular_z, cfg.max_angular),
            reason=MOVING,
            label=label,
        )

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
                linear_x=_ramp(self._last.linear_x, target.linear_x, cfg.max_linear_accel, dt),
                angular_z=_ramp(self._last.angular_z, target.angular_z, cfg.max_angular_accel, dt),
            )
        if out.reason == STALE and self._last.reason != STALE:
            self.counters.stale_events += 1
        self._last = out
        self._last_time = now
        return out


def _clip(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


def _ramp(previous: float, target: float, accel: float, dt: float) -> float:
    """One axis: speed grows by at most ``accel * dt``; slowing down and stopping are immediate."""
    if accel <= 0.0:
        return target
    if previous * target < 0.0:
        previous = 0.0  # reversing: drop to zero at once, then ramp the other way
    if abs(target) <= abs(previous):
        return target
    step = accel * dt
    return min(target, previous + step) if target > previous else max(target, previous - step)
