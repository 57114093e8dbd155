"""Declaring validated, described parameters with one call per parameter.

Validation callbacks are registered before the parameters are declared, so
launch-time overrides and run-time ``ros2 param set`` go through the same
check, which returns a reason when it refuses a value. Descriptors carry the
description (with units) and numeric ranges, so rclpy itself refuses
out-of-range values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterNotDeclaredException
from rclpy.node import Node
from rclpy.parameter import Parameter

from dli_perception.core.choices import check_value

Check = Callable[[Any], str | None]
"""A validator returns None when the value is fine, else the reason it is refused."""


@dataclass(frozen=True)
class Param:
    """One parameter: name, default, description (say the units), optional range/choices/validator."""

    name: str
    default: Any
    description: str
    choices: Sequence[Any] | None = None
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    read_only: bool = False
    check: Check | None = None

    def descriptor(self) -> ParameterDescriptor:
        desc = self.description
        if self.choices:
            desc += f" One of: {', '.join(map(str, self.choices))}."
        d = ParameterDescriptor(description=desc, read_only=self.read_only)
        if self.min is not None and self.max is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [
                    IntegerRange(from_value=int(self.min), to_value=int(self.max), step=int(self.step or 0))
                ]
            elif isinstance(self.default, float):
                d.floating_point_range = [
                    FloatingPointRange(
                        from_value=float(self.min), to_value=float(self.max), step=float(self.step or 0.0)
                    )
                ]
        return d

    def validate(self, value: Any) -> str | None:
        """None when ``value`` is acceptable, else the reason (choices, then ``check``)."""
        return check_value(self.name, value, self.choices, self.check)


def declare(
    node: Node, params: Iterable[Param], on_change: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Register validation (and an optional post-change hook), declare ``params``, return their values.

    ``on_change`` receives ``{name: new_value}`` after a run-time change was accepted,
    so the node keeps plain attributes current and never calls ``get_parameter`` on a hot path.
    """
    params = list(params)
    by_name = {p.name: p for p in params}

    def validate(changes: list[Parameter]) -> SetParametersResult:
        for change in changes:
            spec = by_name.get(change.name)
            if spec is None:
                continue  # use_sim_time and other parameters that are not ours
            reason = spec.validate(change.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    if hasattr(node, "add_pre_set_parameters_callback"):  # Iron and newer
        node.add_pre_set_parameters_callback(lambda changes: _refuse_undeclared(node, changes))
    declared = node.declare_parameters("", [(p.name, p.default, p.descriptor()) for p in params])
    values = {p.name: v.value for p, v in zip(params, declared, strict=True)}
    if on_change is not None:
        # Registered after declaring: the values above are the start-up state, later changes arrive here.
        if hasattr(node, "add_post_set_parameters_callback"):
            node.add_post_set_parameters_callback(
                lambda changes: on_change({c.name: c.value for c in changes if c.name in by_name})
            )
        else:  # Humble has no post-set callback: apply inside the validating callback once accepted.

            def validate_and_apply(changes: list[Parameter]) -> SetParametersResult:
                result = validate(changes)
                if result.successful:
                    on_change({c.name: c.value for c in changes if c.name in by_name})
                return result

            node.remove_on_set_parameters_callback(validate)
            _add_last_on_set_callback(node, validate_and_apply)
    return values


class UndeclaredParameterError(ParameterNotDeclaredException):
    """A set of a parameter the node does not declare; the message names it (and a close match)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


def _refuse_undeclared(node: Node, changes: list[Parameter]) -> list[Parameter]:
    """Pre-set callback: refuse names the node does not declare, naming them.

    rclpy's own refusal names none ("undeclared parameter(s): []": it lists a generator it has
    already consumed). Raising its exception class keeps the behaviour: ``set_parameters`` raises,
    the parameter services answer ``successful: false`` with this message as the reason.
    """
    if getattr(node, "_allow_undeclared_parameters", False):
        return changes
    unknown = [c.name for c in changes if not node.has_parameter(c.name)]
    if unknown:
        import difflib

        known = list(node.list_parameters([], 0).names)
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UndeclaredParameterError(
            f"undeclared parameter(s): {', '.join(hints)}: {node.get_name()} has no such parameter; "
            f"`ros2 param list {node.get_fully_qualified_name()}` lists the ones it has"
        )
    return changes


def _add_last_on_set_callback(node: Node, callback: Callable[[list[Parameter]], SetParametersResult]) -> None:
    """Register ``callback`` to run after every other on-set callback (the Humble fallback above).

    rclpy calls on-set callbacks newest first and stops at the first refusal, so a callback that
    applies changes must come last, or it applies a change that a node's own cross-parameter check
    (registered before :func:`declare`) then refuses. rclpy has no public way to append; its list
    is ``_parameters_callbacks`` on Humble (``_on_set_parameters_callbacks`` from Iron on).
    """
    for attr in ("_parameters_callbacks", "_on_set_parameters_callbacks"):
        callbacks = getattr(node, attr, None)
        if isinstance(callbacks, list):
            callbacks.append(callback)
            return
    node.add_on_set_parameters_callback(callback)
