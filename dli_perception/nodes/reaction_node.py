"""reaction_node: turns the classifier's results into ``cmd_vel`` velocity commands.

An action table (YAML, see :mod:`dli_perception.core.reaction`) maps each class to
velocities. A timer publishes one command every period from
:class:`~dli_perception.core.reaction.ReactionPolicy`, which stops the robot when
disabled, when labels stop arriving for ``stale_timeout_s``, on the unknown label,
on a score below ``min_score`` (as the unknown label), on unmapped labels and stop actions,
and limits speed and acceleration.

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
  changes; ``reason`` is one of :data:`~dli_perception.core.reaction.REASONS`, or ``"shutdown"``
  in the last one.
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

import threading
import time
from pathlib import Path
from typing import Any

from geometry_msgs.msg import Twist, TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import SetBool

from dli_perception import transport
from dli_perception.core.contracts import ClassList, Label, ReactionState, Scores
from dli_perception.core.logtext import quoted
from dli_perception.core.reaction import (
    COLLISION_AVOIDANCE,
    MOVING,
    STALE,
    ActionTable,
    Command,
    PolicyConfig,
    ReactionPolicy,
    class_table_mismatch,
    load_action_table,
)
from dli_perception.errors import BadMessageError
from dli_perception.nodes.diagnostics import OK, WARN, DiagnosticsPublisher
from dli_perception.nodes.params import Param, declare
from dli_perception.nodes.qos import EVENTS, LATCHED, overridable
from dli_perception.nodes.runtime import node_main

DEADLINE_SLACK_S = 0.002
"""The watchdog firing this much before its deadline counts as on time (a timer's rounding), seconds."""

SHUTDOWN_ACK_TIMEOUT_S = 0.5
"""How long destroy_node waits for subscribers to acknowledge the final zero Twist."""

PARAMS = [
    Param(
        "actions_file",
        "",
        "Action table YAML (label -> velocities); a bare name is looked up in the "
        "package's config/ folder; empty: the built-in collision-avoidance table (free -> forward, "
        "blocked -> turn).",
        read_only=True,
    ),
    Param(
        "start_enabled",
        False,
        "Allow motion from start-up; false: call ~/enable (SetBool) first.",
        read_only=True,
    ),
    Param(
        "stale_timeout_s",
        0.5,
        "Stop when no label arrived for this long, seconds (0.5 = diff_drive_controller's cmd_vel timeout).",
        min=0.01,
        max=10.0,
    ),
    Param(
        "max_linear",
        0.3,
        "Largest |linear.x| sent, m/s; table values above it are clipped.",
        min=0.0,
        max=10.0,
    ),
    Param(
        "max_angular",
        2.0,
        "Largest |angular.z| sent, rad/s; table values above it are clipped.",
        min=0.0,
        max=20.0,
    ),
    Param(
        "max_linear_accel",
        0.5,
        "Largest growth of |linear.x|, m/s^2; 0: no ramp. Stopping is never ramped.",
        min=0.0,
        max=100.0,
    ),
    Param(
        "max_angular_accel",
        4.0,
        "Largest growth of |angular.z|, rad/s^2; 0: no ramp. Stopping is never ramped.",
        min=0.0,
        max=200.0,
    ),
    Param("rate_hz", 20.0, "cmd_vel publishing rate, Hz.", min=1.0, max=200.0, read_only=True),
    Param(
        "min_score",
        0.0,
        "Treat a result whose score is below this as the unknown label (stop, unless the table maps the "
        "unknown label), 0-1; 0: off. Scores come from the classifier's ~/scores (or JSON label messages); "
        "a plain label has none and stops when this is > 0.",
        min=0.0,
        max=1.0,
    ),
    Param(
        "classifier",
        "classifier_node",
        "Classifier node whose <classifier>/scores (stamped, scored results) drive the robot and whose "
        "latched <classifier>/classes are checked against the action table (relative: a namespace moves "
        "it); empty: plain labels on `label` only.",
        read_only=True,
    ),
    Param(
        "max_frame_age_s",
        0.0,
        "Ignore a result whose source image is older than this by this node's clock (then the robot "
        "stops as stale), seconds; 0: off (camera and robot clocks may differ).",
        min=0.0,
        max=10.0,
    ),
    Param(
        "stamped",
        False,
        "Publish geometry_msgs/TwistStamped (ros2_control diff_drive_controller on Jazzy and later) instead of Twist.",
        read_only=True,
    ),
]

POLICY_PARAMS = (
    "stale_timeout_s",
    "max_linear",
    "max_angular",
    "max_linear_accel",
    "max_angular_accel",
    "min_score",
)

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


class ReactionNode(Node):
    """Subscribes ``label`` (std_msgs/String), publishes ``cmd_vel`` at ``rate_hz``; ``~/enable`` gates it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("reaction_node", **kwargs)
        p = declare(self, PARAMS, on_change=self._on_params)
        self._rate_hz = p["rate_hz"]
        self._stamped = p["stamped"]
        self._actions_source = (
            str(resolve_actions_file(p["actions_file"])) if p["actions_file"] else "<built-in collision avoidance>"
        )
        config = PolicyConfig(max_step_s=2.0 / self._rate_hz, **{name: p[name] for name in POLICY_PARAMS})
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
        self.label_sub = self.create_subscription(String, "label", self._on_label, **overridable(self, EVENTS))
        self.scores_sub = self.classes_sub = None
        if p["classifier"]:
            self.scores_sub = self.create_subscription(
                String, f"{p['classifier']}/scores", self._on_scores, **overridable(self, EVENTS)
            )
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

        table = self._policy.table
        mapped = ", ".join(table.actions)
        inputs = self.label_sub.topic_name
        if self.scores_sub is not None:
            inputs = f"{self.scores_sub.topic_name} (else {inputs})"
        elif p["min_score"] > 0.0:
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
        policy_changes = {k: v for k, v in changes.items() if k in POLICY_PARAMS}
        if policy_changes:
            with self._lock:
                self._policy.set_config(**policy_changes)

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
        self._react(label.label, label.score, SOURCE_NONE)

    def _on_scores(self, msg: String) -> None:
        """The classifier's stamped, scored result: it drives the robot."""
        with self._lock:
            self._scores_last = time.monotonic()
        try:
            result = Scores.decode(msg.data)
        except BadMessageError as exc:
            self._bad_message(msg.data, exc)
            self._react(self._policy.table.unknown_label, None, SOURCE_NONE)
            return
        if self._max_frame_age_s > 0.0:
            age_s = (self.get_clock().now().nanoseconds - result.stamp_ns) / 1e9
            if age_s > self._max_frame_age_s:
                self.old_results += 1
                self.get_logger().warning(
                    f"ignoring {result.label!r}: its image is {age_s:.3f} s old (max_frame_age_s="
                    f"{self._max_frame_age_s:g})",
                    throttle_duration_sec=5.0,
                )
                return
        self._react(result.label, result.score, (result.stamp_ns, result.frame_id))

    def _on_classes(self, msg: String) -> None:
        """The model's latched class list: warn when the action table does not fit it."""
        try:
            classes = ClassList.decode(msg.data).names
        except BadMessageError as exc:
            self.bad_messages += 1
            self.get_logger().warning(f"bad class list {quoted(msg.data, 80)}: {exc}")
            return
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

    def _react(self, label: str, score: float | None, source: tuple[int | None, str]) -> None:
        now = time.monotonic()
        with self._lock:
            if self._closing:
                return
            self._source = source
            self._policy.on_label(label, now, score)
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
            values = {
                "enabled": policy.enabled,
                "label": policy.label or "",
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
            level, message = WARN, f"stopped: no label for {policy.config.stale_timeout_s:g} s"
        elif cmd.reason == MOVING:
            level, message = OK, f"moving: {cmd.label}"
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
