"""Named QoS profiles: every publisher and subscription picks one of these, never a literal.

Frames and labels are endpoints YAML may tune: :func:`overridable` turns on rclpy's
``qos_overriding_options`` for them, so ``qos_overrides./image_raw.publisher.depth: 3`` (and
``history``, ``reliability``) in a params file or ``-p`` changes the QoS the endpoint is created with.
"""

from __future__ import annotations

import copy
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from dli_perception.errors import ConfigError

SENSOR_DATA = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)
"""Camera frames: best effort, only the newest frame kept (stale frames are dropped, never queued)."""

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""State a late joiner must still get: class names, current model, per-class counts."""

EVENTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""Labels, commands and progress: reliable, a short queue."""

ROSOUT = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1000,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""Subscribing to ``/rosout`` as rcl publishes it (reliable, transient local, deep): node messages logged before
the subscription matched still arrive."""

QOS_OVERRIDE_PREFIX = "qos_overrides."
"""Parameters ``qos_overrides.<topic>.<publisher|subscription>.<policy>`` tune the QoS of frames and labels."""

OVERRIDE_CHOICES = {
    "history": ("keep_last", "keep_all", "system_default"),
    "reliability": ("reliable", "best_effort", "system_default", "best_available"),
}
"""Accepted values of the overridable enum policies (``depth`` takes a whole number >= 0)."""


def overridable(node: Node, profile: QoSProfile) -> dict[str, Any]:
    """Keyword arguments of ``create_publisher``/``create_subscription`` for an endpoint whose QoS YAML may tune.

    Gives a copy of ``profile`` (rclpy writes the overrides into the profile it is given) and
    ``QoSOverridingOptions.with_default_policies()``: history, depth and reliability can then be set
    with ``qos_overrides.<full topic>.<publisher|subscription>.<policy>`` parameters (read-only, start-up
    only). Raises :class:`~dli_perception.errors.ConfigError` naming the parameter when a value is one
    rclpy would refuse with a bare RuntimeError.
    """
    from rclpy.qos_overriding_options import QoSOverridingOptions

    check_qos_overrides(qos_overrides_given(node))
    return {
        "qos_profile": copy.copy(profile),
        "qos_overriding_options": QoSOverridingOptions.with_default_policies(),
    }


def qos_overrides_given(node: Node) -> dict[str, Any]:
    """The ``qos_overrides.*`` values the node was started with (``--ros-args -p``, params files, overrides)."""
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    return {name: p.value for name, p in overrides.items() if name.startswith(QOS_OVERRIDE_PREFIX)}


def check_qos_overrides(values: dict[str, Any]) -> None:
    """ConfigError for a QoS override value that is no value of its policy."""
    for name, value in values.items():
        policy = name.rsplit(".", 1)[-1]
        if policy == "depth":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}: depth must be a whole number >= 0, got {value!r}")
        elif policy in OVERRIDE_CHOICES and (
            not isinstance(value, str) or value.lower() not in OVERRIDE_CHOICES[policy]
        ):
            raise ConfigError(
                f"{name}: {value!r} is no {policy} policy; use one of {', '.join(OVERRIDE_CHOICES[policy])}"
            )


def unused_qos_overrides(node: Node) -> list[str]:
    """QoS overrides given to ``node`` that no endpoint of it declared (a typo, or another node's topic)."""
    return sorted(name for name in qos_overrides_given(node) if not node.has_parameter(name))


def warn_unused_qos_overrides(node: Node) -> None:
    """Log, once after construction, the QoS overrides that change nothing in ``node``, with the ones it takes."""
    unused = unused_qos_overrides(node)
    if not unused:
        return
    taken = [n for n in node.list_parameters([], 0).names if n.startswith(QOS_OVERRIDE_PREFIX)]
    node.get_logger().warning(
        f"QoS override(s) {', '.join(unused)} match no publisher or subscription of this node and change "
        f"nothing; the ones it takes: {', '.join(sorted(taken)) or 'none'}"
    )
