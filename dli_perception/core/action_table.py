"""Action tables: which velocities the robot drives while each label is current.

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
``default`` action never applies to it. :func:`load_action_table` reads and checks a table;
:class:`~dli_perception.core.reaction.ReactionPolicy` turns its actions into commands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dli_perception.errors import ConfigError

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
        key: finite_number(spec[key], f"{where}.{key}")
        for key in ("linear_x", "angular_z", "duration_s")
        if key in spec
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


def finite_number(value: Any, where: str) -> float:
    """``value`` as a float; :class:`ConfigError` naming ``where`` when it is no finite number (bools included)."""
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
