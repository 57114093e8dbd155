"""One option's value checked: against its allowed choices, then the option's own check.

The node parameter tables (:mod:`dli_perception.nodes.params`) and the training options table
(:mod:`dli_perception.core.training.options`) validate their values with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def check_value(
    name: str, value: Any, choices: Sequence[Any] | None, check: Callable[[Any], str | None] | None
) -> str | None:
    """None when ``value`` is one of ``choices`` (any value when None) and ``check`` accepts it, else the reason."""
    if choices is not None and value not in choices:
        return f"{name}={value!r} is not one of {list(choices)}"
    if check is not None:
        return check(value)
    return None
