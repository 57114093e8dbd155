"""reaction_node: turns the classifier's results into ``cmd_vel`` velocity commands.

``policy:=table`` (the default): an action table (YAML, see :mod:`dli_perception.core.action_table`) maps
each class to velocities. A timer publishes one command every period from
:class:`~dli_perception.core.reaction.ReactionPolicy`, which stops the robot when
disabled, when labels stop arriving for ``stale_timeout_s``, on the unknown label,
on a score below ``min_score`` (as the unknown label), on unmapped labels and stop actions,
and limits speed and acceleration.

``policy:=steer``: a regression model's target point on ``xy`` (geometry_msgs/PointStamped, normalised
image coordinates, the source image's header) is followed like road following by
:class:`~dli_perception.core.steering.SteeringPolicy` (target angle, ``steer_*`` P and D gains, speed,
bias, clamp) under the same watchdog, ramp, enable gate and stops; ``label`` and ``<classifier>/scores``
are not subscribed, ``max_frame_age_s`` applies to the point's header stamp, a non-finite point stops
the robot (reason ``bad-target``), and ``<classifier>/classes`` must be ``x, y``.

Topics and services (relative names, so a namespace or remapping moves them):

* ``<classifier>/scores`` (std_msgs/String, in; :class:`~dli_perception.core.contracts.Scores`):
  the classifier's stamped, scored result of every frame; ``classifier`` names the node
  (default ``classifier_node``), empty turns this input off. While these arrive, they drive the
  robot and plain labels are ignored; their score is what ``min_score`` applies to, and their
  source image header travels into ``~/state`` (and, with ``max_frame_age_s``, stops on old frames).
* ``label`` (std_msgs/String, in; :class:`~dli_perception.core.contracts.Label`): a class name, or
  JSON ``{"label": "free", "score": 0.93}``; used when no scores arrived for ``stale_timeout_s``
  (a publisher other than the classifier). A plain label has no score: with ``min_score`` > 0 it
  stops the robot. The publisher must repeat the current label (e.g. every frame): silence is staleness.
* ``<classifier>/classes`` (std_msgs/String, latched, in; :class:`~dli_perception.core.contracts.ClassList`):
  the model's classes; when they and the action table share no or only some names the node warns,
  in its log and on ``/diagnostics`` (WARN).
* ``cmd_vel`` (geometry_msgs/Twist, or TwistStamped with ``stamped``; out, every 1/``rate_hz`` s).
* ``~/state`` (std_msgs/String, latched, out; :class:`~dli_perception.core.contracts.ReactionState`):
  ``{enabled, label, reason, linear_x, angular_z, stamp, frame_id}`` whenever enable/label/reason
  changes; ``reason`` is one of :data:`~dli_perception.core.reaction.REASONS` (steer:
  :data:`~dli_perception.core.steering.STEER_REASONS`, ``label`` null), or ``"shutdown"`` in the last one.
* ``~/enable`` (std_srvs/SetBool): gates all motion.
* ``/diagnostics``: label, reason, last command, label age, labels received, stale events,
  the model's classes and the names the table and the model do not share.

Safety: motion starts disabled (call ``~/enable`` with ``data: true``, or set
``start_enabled``); a zero Twist is published on every stop path, at once when a
label or ``~/enable`` stops the robot, and as the node's last message on shutdown.
The watchdog is a one-shot timer armed at every label for the moment that label goes
stale (or its action's ``duration_s`` ends), so the stop goes out at that deadline, not
at the next periodic command. It runs on the steady clock (``time.monotonic``), not on sim time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geometry_msgs.msg import PointStamped, Twist, TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool

from dli_perception import transport
from dli_perception.core.action_table import COLLISION_AVOIDANCE, ActionTable, class_table_mismatch, load_action_table
from dli_perception.core.contracts import ClassList, Label, ReactionState, Scores, stamp_ns_of
from dli_perception.core.logtext import quoted
from dli_perception.core.reaction import MOVING, STALE, Command, PolicyConfig, ReactionPolicy
from dli_perception.core.steering import SteeringConfig, SteeringPolicy
from dli_perception.core.tasks import XY_NAMES
from dli_perception.errors import BadMessageError
from dli_perception.nodes.diagnostics import OK, WARN, DiagnosticsPublisher
from dli_perception.nodes.params import declare
from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA, overridable
from dli_perception.nodes.reaction_params import PARAMS, POLICY_PARAMS, STEER_FIELDS
from dli_perception.nodes.runtime import node_main

DEADLINE_SLACK_S = 0.002
"""The watchdog firing this much before its deadline counts as on time (a timer's rounding), seconds."""

SHUTDOWN_ACK_TIMEOUT_S = 0.5
"""How long destroy_node waits for subscribers to acknowledge the final zero Twist."""

__all__ = ["PARAMS", "ReactionNode", "load_table", "main", "resolve_actions_file", "steer_class_mismatch"]

SOURCE_NONE: tuple[int | None, str] = (None, "")
"""The source header of a label that came without one (plain labels)."""


def resolve_actions_file(name: str) -> Path:
    """``name`` as given when it exists, else the same name in the package's config folder."""
    path = Path(name).expanduser()
    if path.is_file() or path.is_absolute() or len(path.parts) > 1:
        return path
    shipped = transport.share_dir() / "config" / path
    return shipped if shipped.is_file() else path


def load_table(actions_file: str) -> ActionTable:
    """The table ``actions_file`` names (empty: the built-in one); ConfigError when it is bad."""
    if not actions_file:
        return load_action_table(COLLISION_AVOIDANCE)
    return load_action_table(resolve_actions_file(actions_file))


def steer_class_mismatch(classes: tuple[str, ...]) -> str:
    """Why a model with ``classes`` cannot steer (its outputs are not an XY target); "" when it can."""
    if tuple(classes) == XY_NAMES:
        return ""
    return (
        f"the steer policy follows a regression model's XY target (outputs x, y), but the model's outputs are "
        f"{', '.join(classes) or 'none'}: it publishes no xy and the robot stays stopped"
    )


class ReactionNode(Node):
    """Subscribes ``label`` and the classifier's scores (table) or ``xy`` (steer), publishes ``cmd_vel`` at
    ``rate_hz``; ``~/enable`` gates it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("reaction_node", **kwargs)
        p = declare(self, PARAMS, on_change=self._on_params)
        self._rate_hz = p["rate_hz"]
        self._stamped = p["stamped"]
        self._steer = p["policy"] == "steer"
        config = PolicyConfig(max_step_s=2.0 / self._rate_hz, **{name: p[name] for name in POLICY_PARAMS})
        if self._steer:
            self._actions_source = "<steer: xy targets>"
            gains = SteeringConfig(**{field: p[name] for name, field in STEER_FIELDS.items()})
            self._policy: ReactionPolicy | SteeringPolicy = SteeringPolicy(gains, config, enabled=p["start_enabled"])
        else:
            self._actions_source = (
                str(resolve_actions_file(p["actions_file"])) if p["actions_file"] else "<built-in collision avoidance>"
            )
            self._policy = ReactionPolicy(load_table(p["actions_file"]), config, enabled=p["start_enabled"])
        self._lock = threading.Lock()
        self._closing = False
        self._last_published: Command | None = None
        self._last_state: tuple | None = None
        self.commands_published = 0
        self.bad_messages = 0
        self.labels_ignored = 0  # plain labels while scores drive the robot
        self.old_results = 0  # results whose source image was older than max_frame_age_s
        self._max_frame_age_s = p["max_frame_age_s"]
        self._scores_last: float | None = None  # time.monotonic() of the last scores message
        self._source = SOURCE_NONE  # (stamp_ns, frame_id) of the image the current label came from
        self._model_classes: tuple[str, ...] | None = None
        self._mismatch = ""

        self.cmd_pub = self.create_publisher(TwistStamped if self._stamped else Twist, "cmd_vel", EVENTS)
        self.state_pub = self.create_publisher(String, "~/state", LATCHED)
        self.label_sub = self.scores_sub = self.classes_sub = self.xy_sub = None
        if self._steer:
            # Best effort matches a reliable or a best-effort publisher; the newest point is all that counts.
            self.xy_sub = self.create_subscription(PointStamped, "xy", self._on_xy, **overridable(self, SENSOR_DATA))
        else:
            self.label_sub = self.create_subscription(String, "label", self._on_label, **overridable(self, EVENTS))
            if p["classifier"]:
                self.scores_sub = self.create_subscription(
                    String, f"{p['classifier']}/scores", self._on_scores, **overridable(self, EVENTS)
                )
        if p["classifier"]:
            self.classes_sub = self.create_subscription(String, f"{p['classifier']}/classes", self._on_classes, LATCHED)
        self.enable_srv = self.create_service(SetBool, "~/enable", self._on_enable)
        self.diagnostics = DiagnosticsPublisher(self, self._diagnostics)
        self.timer = self.create_timer(1.0 / self._rate_hz, self._on_timer)
        # One-shot (cancelled when it fires), re-armed at every label for the policy's deadline.
        self._deadline: float | None = None
        self._watchdog = self.create_timer(
            p["stale_timeout_s"], self._on_deadline, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self._watchdog.cancel()
        self._publish_command(self._policy.command(time.monotonic()))

        if self._steer:
            g = self._policy.steering
            inputs = self.xy_sub.topic_name
            mapped = f"speed {g.speed:g} m/s, kp {g.kp:g}, kd {g.kd:g}, bias {g.bias:g}, max {g.max_steer:g} rad/s"
        else:
            mapped = ", ".join(self._policy.table.actions)
            inputs = self.label_sub.topic_name
        if self.scores_sub is not None:
            inputs = f"{self.scores_sub.topic_name} (else {inputs})"
        elif p["min_score"] > 0.0 and not self._steer:
            self.get_logger().warning(
                f"min_score={p['min_score']:g} with plain labels only (classifier is empty): a label without "
                "a score stops the robot; send JSON labels with a score, or set classifier"
            )
        self.get_logger().info(
            f"reacting to {inputs} ({mapped}) from {self._actions_source}; publishing "
            f"{self.cmd_pub.topic_name} at {self._rate_hz:g} Hz; motion "
            f"{'ENABLED' if self._policy.enabled else 'disabled until ~/enable'}"
        )

    # -- parameters -----------------------------------------------------------------------------
    def _on_params(self, changes: dict[str, Any]) -> None:
        self._max_frame_age_s = changes.get("max_frame_age_s", self._max_frame_age_s)
        steer_changes = {STEER_FIELDS[k]: v for k, v in changes.items() if k in STEER_FIELDS}
        with self._lock:
            policy_changes = {k: v for k, v in changes.items() if k in POLICY_PARAMS}
            if policy_changes:
                self._policy.set_config(**policy_changes)
            if steer_changes and self._steer:
                self._policy.set_steering(**steer_changes)

    # -- events ---------------------------------------------------------------------------------
    def _on_label(self, msg: String) -> None:
        """A plain (or JSON) label: used only while no scores arrive."""
        now = time.monotonic()
        with self._lock:
            scores_live = self._scores_last is not None and (
                now - self._scores_last < self._policy.config.stale_timeout_s
            )
            if scores_live:
                self.labels_ignored += 1
                return
        try:
            label = Label.decode(msg.data)
        except BadMessageError as exc:
            self._bad_message(msg.data, exc)
            label = Label(self._policy.table.unknown_label)
        self._react(SOURCE_NONE, lambda now: self._policy.on_label(label.label, now, label.score))

    def _on_scores(self, msg: String) -> None:
        """The classifier's stamped, scored result: it drives the robot."""
        with self._lock:
            self._scores_last = time.monotonic()
        try:
            result = Scores.decode(msg.data)
        except BadMessageError as exc:
            self._bad_message(msg.data, exc)
            unknown = self._policy.table.unknown_label
            self._react(SOURCE_NONE, lambda now: self._policy.on_label(unknown, now, None))
            return
        if self._too_old(result.stamp_ns, repr(result.label)):
            return
        self._react(
            (result.stamp_ns, result.frame_id), lambda now: self._policy.on_label(result.label, now, result.score)
        )

    def _on_xy(self, msg: PointStamped) -> None:
        """steer: a target point (normalised image coordinates) with its source image's header."""
        stamp_ns = stamp_ns_of(msg.header)
        x, y = float(msg.point.x), float(msg.point.y)
        if not (math.isfinite(x) and math.isfinite(y)):
            self.bad_messages += 1
            self.get_logger().warning(f"bad target point ({x}, {y}); stopping", throttle_duration_sec=5.0)
        elif self._too_old(stamp_ns, f"target ({x:+.2f}, {y:+.2f})"):
            return
        self._react((stamp_ns, msg.header.frame_id), lambda now: self._policy.on_target(x, y, now))

    def _too_old(self, stamp_ns: int, what: str) -> bool:
        """True (counted, logged) when ``max_frame_age_s`` is on and the source image is older than that."""
        if self._max_frame_age_s <= 0.0:
            return False
        age_s = (self.get_clock().now().nanoseconds - stamp_ns) / 1e9
        if age_s <= self._max_frame_age_s:
            return False
        self.old_results += 1
        self.get_logger().warning(
            f"ignoring {what}: its image is {age_s:.3f} s old (max_frame_age_s={self._max_frame_age_s:g})",
            throttle_duration_sec=5.0,
        )
        return True

    def _on_classes(self, msg: String) -> None:
        """The model's latched class list: warn when the action table does not fit it."""
        try:
            classes = ClassList.decode(msg.data).names
        except BadMessageError as exc:
            self.bad_messages += 1
            self.get_logger().warning(f"bad class list {quoted(msg.data, 80)}: {exc}")
            return
        if self._steer:
            mismatch = steer_class_mismatch(classes)
        else:
            mismatch = class_table_mismatch(classes, self._policy.table)
        with self._lock:
            self._model_classes, self._mismatch = classes, mismatch
        if mismatch:
            self.get_logger().warning(f"{mismatch} (actions from {self._actions_source})")
        else:
            self.get_logger().info(f"every class of the model has an action: {', '.join(classes)}")

    def _bad_message(self, text: str, exc: BadMessageError) -> None:
        self.bad_messages += 1
        self.get_logger().warning(f"bad message {quoted(text, 80)}: {exc}; stopping", throttle_duration_sec=5.0)

    def _react(self, source: tuple[int | None, str], feed: Callable[[float], None]) -> None:
        """Feed the policy one input (``feed(now)``: a label or a target) from the image ``source``."""
        now = time.monotonic()
        with self._lock:
            if self._closing:
                return
            self._source = source
            feed(now)
            last = self._last_published
            if last is not None and not last.is_zero and self._policy.target(now).reason != MOVING:
                self._publish_command(self._policy.command(now))  # stop now, not at the next tick
            self._arm_watchdog(now)

    def _arm_watchdog(self, now: float) -> None:
        """(Re)start the one-shot watchdog for the policy's deadline; call with ``_lock`` held."""
        deadline = self._policy.deadline()
        if deadline is None:
            return
        self._deadline = deadline
        self._watchdog.cancel()
        self._watchdog.timer_period_ns = max(1, round((deadline - now) * 1e9))
        self._watchdog.reset()

    def _on_deadline(self) -> None:
        """The watchdog fired: the label went stale (or its action ended); stop now if moving."""
        with self._lock:
            self._watchdog.cancel()  # one shot; the next label arms it again
            deadline, now = self._deadline, time.monotonic()
            if self._closing or deadline is None:
                return
            if now < deadline - DEADLINE_SLACK_S:  # a label moved the deadline after this expiry was due
                self._arm_watchdog(now)
                return
            self._deadline = None
            now = max(now, deadline)  # the steady clock is time.monotonic's: a hair early counts as on time
            if self._policy.target(now).reason != MOVING:
                self._publish_command(self._policy.command(now))

    def _on_timer(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._publish_command(self._policy.command(time.monotonic()))

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            self._policy.set_enabled(request.data)
            if not self._closing:
                self._publish_command(self._policy.command(time.monotonic()))
        response.success = True
        response.message = "motion enabled" if request.data else "motion disabled: robot stopped"
        self.get_logger().info(response.message)
        return response

    # -- output ---------------------------------------------------------------------------------
    def _publish_command(self, cmd: Command) -> None:
        """Publish ``cmd`` on cmd_vel and, when enable/label/reason changed, the latched ``~/state``."""
        twist = Twist()
        twist.linear.x = float(cmd.linear_x)
        twist.angular.z = float(cmd.angular_z)
        if self._stamped:
            msg = TwistStamped(twist=twist)
            msg.header.stamp = self.get_clock().now().to_msg()
            self.cmd_pub.publish(msg)
        else:
            self.cmd_pub.publish(twist)
        self.commands_published += 1
        self._last_published = cmd
        state = (self._policy.enabled, cmd.label, cmd.reason)
        if state != self._last_state:
            self._last_state = state
            self._publish_state(cmd)

    def _publish_state(self, cmd: Command) -> None:
        stamp_ns, frame_id = self._source
        state = ReactionState(
            self._policy.enabled, cmd.label, cmd.reason, cmd.linear_x, cmd.angular_z, stamp_ns, frame_id
        )
        self.state_pub.publish(String(data=state.encode()))

    # -- health ---------------------------------------------------------------------------------
    def _diagnostics(self):
        with self._lock:
            policy = self._policy
            cmd = policy.last_command
            age = policy.label_age(time.monotonic())
            target = policy.target_point if self._steer else None
            values = {
                "policy": "steer" if self._steer else "table",
                "enabled": policy.enabled,
                "label": policy.label or "",
                "target": "" if target is None else f"{target[0]:+.3f}, {target[1]:+.3f}",
                "reason": cmd.reason,
                "linear_x": cmd.linear_x,
                "angular_z": cmd.angular_z,
                "label_age_s": -1.0 if age is None else age,
                "labels_received": policy.counters.labels_received,
                "stale_events": policy.counters.stale_events,
                "bad_messages": self.bad_messages,
                "labels_ignored": self.labels_ignored,
                "old_results": self.old_results,
                "commands_published": self.commands_published,
                "actions_file": self._actions_source,
                "model_classes": "" if self._model_classes is None else ", ".join(self._model_classes),
                "class_table_mismatch": self._mismatch,
            }
            mismatch = self._mismatch
        if not policy.enabled:
            level, message = OK, "disabled: call ~/enable to allow motion"
        elif cmd.reason == STALE:
            what = "target" if self._steer else "label"
            level, message = WARN, f"stopped: no {what} for {policy.config.stale_timeout_s:g} s"
        elif cmd.reason == MOVING:
            level, message = OK, f"moving: {cmd.label or 'following the target'}"
        else:
            level, message = OK, f"stopped: {cmd.reason}"
        if mismatch:
            level, message = WARN, f"{message}; {mismatch}"
        return level, message, values

    def destroy_node(self) -> None:
        """Stop the timer, publish a final zero Twist (waiting briefly for acknowledgement), then destroy."""
        if not hasattr(self, "timer"):  # the constructor failed part-way (e.g. a bad actions_file)
            super().destroy_node()
            return
        with self._lock:
            self._closing = True
            self.destroy_timer(self.timer)
            self.destroy_timer(self._watchdog)
            try:
                self._publish_command(Command(reason="shutdown", label=self._policy.label))
            except Exception as exc:  # the context may already be gone; the rest must still be destroyed
                self.get_logger().error(f"could not publish the final zero Twist: {exc}")
        try:
            acked = self.cmd_pub.wait_for_all_acked(Duration(seconds=SHUTDOWN_ACK_TIMEOUT_S))
            if not acked and self.cmd_pub.get_subscription_count() > 0:
                self.get_logger().warning(f"final zero Twist not acknowledged within {SHUTDOWN_ACK_TIMEOUT_S:g} s")
        except Exception as exc:
            self.get_logger().warning(f"could not confirm delivery of the final zero Twist: {exc}")
        super().destroy_node()


main = node_main(ReactionNode)

if __name__ == "__main__":
    import sys

    sys.exit(main())
