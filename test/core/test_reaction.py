"""Action tables and the reaction policy, driven with an injected clock and exact numbers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from dli_perception.core.action_table import (
    COLLISION_AVOIDANCE,
    STOP,
    Action,
    ActionTable,
    class_table_mismatch,
    load_action_table,
)
from dli_perception.core.reaction import (
    DISABLED,
    DURATION_ELAPSED,
    LOW_SCORE,
    MOVING,
    NO_LABEL,
    STALE,
    STOP_ACTION,
    UNKNOWN,
    UNMAPPED,
    PolicyConfig,
    ReactionPolicy,
)
from dli_perception.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[2] / "config"
NO_RAMP = PolicyConfig(max_linear_accel=0.0, max_angular_accel=0.0)


def table(**actions) -> ActionTable:
    return load_action_table({"actions": actions})


def policy(tbl: ActionTable | None = None, config: PolicyConfig = NO_RAMP, enabled: bool = True) -> ReactionPolicy:
    return ReactionPolicy(tbl or load_action_table(COLLISION_AVOIDANCE), config, enabled=enabled)


# -- action tables -------------------------------------------------------------------------------


def test_shipped_collision_avoidance_file_equals_the_builtin_table():
    from_file = load_action_table(CONFIG / "reaction_collision_avoidance.yaml")
    assert from_file == load_action_table(COLLISION_AVOIDANCE)
    assert from_file.actions["free"] == Action(linear_x=0.15, angular_z=0.0)
    assert from_file.actions["blocked"] == Action(linear_x=0.0, angular_z=1.0)
    assert from_file.default == STOP


def test_shipped_thumbs_table():
    t = load_action_table(CONFIG / "reaction_thumbs.yaml")
    assert t.actions["thumbs_up"] == Action(linear_x=0.15)
    assert t.actions["thumbs_down"] == Action(linear_x=-0.1, duration_s=1.0)
    assert t.lookup("fist") == (STOP, "unmapped")


def test_table_round_trips_through_yaml(tmp_path):
    t = table(go={"linear_x": 0.2, "duration_s": 2}, halt="stop", spin={"angular_z": -0.5})
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(t.to_dict()))
    assert load_action_table(path) == t
    assert load_action_table(str(path)) == t


def test_lookup_unknown_always_stops_unless_listed_and_default_applies_to_unmapped():
    t = load_action_table({"actions": {"free": {"linear_x": 0.1}}, "default": {"angular_z": 0.3}})
    assert t.lookup("free") == (Action(linear_x=0.1), "mapped")
    assert t.lookup("other") == (Action(angular_z=0.3), "unmapped")
    assert t.lookup("unknown") == (STOP, "unknown")  # the moving default never applies to unknown
    assert t.lookup("") == (STOP, "unknown")
    listed = load_action_table({"actions": {"unknown": {"angular_z": 0.2}}})
    assert listed.lookup("unknown") == (Action(angular_z=0.2), "mapped")
    renamed = load_action_table({"actions": {"a": "stop"}, "unknown_label": "dunno"})
    assert renamed.lookup("dunno") == (STOP, "unknown")
    assert renamed.lookup("unknown") == (STOP, "unmapped")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"free": {"linear_x": 0.1}}, "top-level 'actions:'"),
        ({"reaction_node": {"ros__parameters": {}}}, "ROS parameter file"),
        ({"actions": {"a": "stop"}, "defaults": "stop"}, "unknown top-level key"),
        ({"actions": {}}, "non-empty"),
        ({"actions": {"a": {"linear": 0.1}}}, "unknown key(s) ['linear']"),
        ({"actions": {"a": {"linear_x": "fast"}}}, "actions.a.linear_x must be a number"),
        ({"actions": {"a": {"linear_x": True}}}, "must be a number"),
        ({"actions": {"a": {"angular_z": float("nan")}}}, "finite"),
        ({"actions": {"a": {"linear_x": 0.1, "duration_s": 0}}}, "duration_s must be > 0"),
        ({"actions": {"a": {"stop": True, "linear_x": 0.1}}}, "cannot be combined"),
        ({"actions": {"a": {"stop": "yes"}}}, "stop must be true or false"),
        ({"actions": {"a": {}}}, "give linear_x"),
        ({"actions": {"a": "halt"}}, "expected 'stop'"),
        ({"actions": {True: "stop"}}, "quote it"),
        ({"actions": {"a": "stop"}, "unknown_label": ""}, "unknown_label"),
        ({"actions": {"a": "stop"}, "default": {"linear_x": "x"}}, "default.linear_x"),
    ],
)
def test_table_errors_say_what_and_where(data, message):
    with pytest.raises(ConfigError) as info:
        load_action_table(data)
    assert message in str(info.value)


def test_yaml_bool_label_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("actions:\n  on: stop\n")  # YAML 1.1 reads `on` as True
    with pytest.raises(ConfigError, match="quote it"):
        load_action_table(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_action_table(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("actions: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_action_table(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stale_timeout_s": 0.0}, "stale_timeout_s"),
        ({"max_step_s": -1.0}, "max_step_s"),
        ({"max_linear": -0.1}, "max_linear"),
        ({"max_angular_accel": float("inf")}, "finite"),
        ({"min_score": 1.5}, "min_score"),
        ({"max_linear": "1"}, "number"),
    ],
)
def test_policy_config_is_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PolicyConfig(**kwargs)


# -- the policy ----------------------------------------------------------------------------------


def test_starts_disabled_by_default_and_enable_gates_all_motion():
    p = ReactionPolicy(load_action_table(COLLISION_AVOIDANCE), NO_RAMP)
    p.on_label("free", 0.0)
    cmd = p.command(0.0)
    assert (cmd.linear_x, cmd.angular_z, cmd.reason, cmd.label) == (0.0, 0.0, DISABLED, "free")
    p.set_enabled(True)
    cmd = p.command(0.1)
    assert (cmd.linear_x, cmd.angular_z, cmd.reason) == (0.15, 0.0, MOVING)
    p.set_enabled(False)
    assert p.command(0.2).is_zero and p.last_command.reason == DISABLED


def test_each_class_gets_its_action():
    p = policy()
    p.on_label("free", 0.0)
    assert (p.command(0.0).linear_x, p.last_command.angular_z) == (0.15, 0.0)
    p.on_label("blocked", 0.1)
    cmd = p.command(0.1)
    assert (cmd.linear_x, cmd.angular_z, cmd.label) == (0.0, 1.0, "blocked")


def test_no_label_then_stale_watchdog_at_exactly_the_timeout():
    p = policy(config=PolicyConfig(stale_timeout_s=0.5, max_linear_accel=0.0, max_angular_accel=0.0))
    assert p.command(0.0).reason == NO_LABEL
    p.on_label("free", 1.0)
    assert p.command(1.25).reason == MOVING
    assert p.command(1.4375).linear_x == 0.15  # 0.4375 s old: still fresh
    cmd = p.command(1.5)  # 0.5 s without a label
    assert cmd.is_zero and cmd.reason == STALE and cmd.label == "free"
    assert p.command(1.75).reason == STALE
    assert p.counters.stale_events == 1
    p.on_label("free", 2.0)  # the stream resumes
    assert p.command(2.0).linear_x == 0.15
    assert p.command(2.5).reason == STALE
    assert p.counters.stale_events == 2
    assert p.counters.labels_received == 2


def test_deadline_is_when_the_label_stops_the_robot_by_time():
    p = policy(table(back={"linear_x": -0.1, "duration_s": 1.0}, go={"linear_x": 0.1}))
    assert p.deadline() is None  # no label yet: nothing to time out
    p.on_label("go", 5.0)
    assert p.deadline() == 5.5  # stale_timeout_s after the last label
    assert p.target(5.5 - 1e-9).reason == MOVING and p.target(5.5).reason == STALE
    p.on_label("go", 5.25)
    assert p.deadline() == 5.75  # each label moves it
    p.on_label("back", 6.0)
    for t in (6.25, 6.5, 6.75):
        p.on_label("back", t)
    assert p.deadline() == 7.0  # the action's duration ends before the label goes stale (7.25)
    assert p.target(7.0).reason == DURATION_ELAPSED
    p.on_label("unknown", 8.0)
    assert p.deadline() == 8.5


def test_repeated_labels_keep_it_moving():
    p = policy()
    for i in range(10):
        p.on_label("free", i * 0.25)
        assert p.command(i * 0.25 + 0.125).linear_x == 0.15
    assert p.counters.stale_events == 0


def test_unknown_and_unmapped_and_stop_action_stop_with_their_reason():
    p = policy(table(go={"linear_x": 0.1}, halt="stop"))
    p.on_label("go", 0.0)
    assert p.command(0.0).reason == MOVING
    for label, reason in (("unknown", UNKNOWN), ("", UNKNOWN), ("cat", UNMAPPED), ("halt", STOP_ACTION)):
        p.on_label(label, 0.1)
        cmd = p.command(0.1)
        assert cmd.is_zero and cmd.reason == reason, label


def test_zero_velocity_action_is_a_stop():
    p = policy(table(still={"linear_x": 0.0, "angular_z": 0.0}))
    p.on_label("still", 0.0)
    assert p.command(0.0).reason == STOP_ACTION


def test_duration_holds_then_stops_until_the_label_changes():
    p = policy(table(back={"linear_x": -0.1, "duration_s": 1.0}, go={"linear_x": 0.1}))
    p.on_label("back", 10.0)
    assert p.command(10.0).linear_x == -0.1
    for t in (10.25, 10.5, 10.75):  # the same label again does not restart the action
        p.on_label("back", t)
        assert p.command(t).linear_x == -0.1
    p.on_label("back", 11.0)
    cmd = p.command(11.0)
    assert cmd.is_zero and cmd.reason == DURATION_ELAPSED
    p.on_label("go", 11.25)
    p.on_label("back", 11.5)  # a new episode of "back"
    assert p.command(11.5).linear_x == -0.1
    p.on_label("back", 11.75)
    p.on_label("back", 12.0)
    p.on_label("back", 12.25)
    assert p.command(12.25).linear_x == -0.1  # 0.75 s into the episode that began at 11.5
    p.on_label("back", 12.5)
    assert p.command(12.5).reason == DURATION_ELAPSED


def test_duration_restarts_after_the_stream_went_stale():
    p = policy(table(back={"linear_x": -0.1, "duration_s": 1.0}))
    p.on_label("back", 0.0)
    p.on_label("back", 0.25)
    assert p.command(0.75).reason == STALE
    p.on_label("back", 0.75)  # gap 0.5 s = stale_timeout: a new episode
    p.on_label("back", 1.0)
    p.on_label("back", 1.25)
    p.on_label("back", 1.5)
    assert p.command(1.5).linear_x == -0.1  # 1.5 s after the first label, 0.75 s into this episode
    p.on_label("back", 1.75)
    assert p.command(1.75).reason == DURATION_ELAPSED


def test_velocity_limits_clip_and_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="dli_perception.core.reaction"):
        p = policy(table(fast={"linear_x": 0.5, "angular_z": -3.0}, slow={"linear_x": -0.5}))
    assert "'fast' asks linear_x=0.5" in caplog.text and "angular_z=-3" in caplog.text
    p.on_label("fast", 0.0)
    cmd = p.command(0.0)
    assert (cmd.linear_x, cmd.angular_z) == (0.3, -2.0)
    p.on_label("slow", 0.1)
    assert p.command(0.1).linear_x == -0.3
    p.set_config(max_linear=0.125)
    assert p.command(0.2).linear_x == -0.125


def test_ramp_limits_speeding_up_exactly():
    cfg = PolicyConfig(max_linear_accel=1.0, max_angular_accel=4.0, max_linear=2.0, max_angular=4.0, max_step_s=1.0)
    p = policy(table(go={"linear_x": 0.75, "angular_z": 1.5}), cfg)
    assert p.command(0.0).is_zero  # no label yet
    p.on_label("go", 0.125)
    got = []
    for t in (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0):
        p.on_label("go", t)
        cmd = p.command(t)
        got.append((cmd.linear_x, cmd.angular_z))
    # dt = 0.125 s: linear grows 0.125 per step up to 0.75, angular 0.5 per step up to 1.5
    assert got == [
        (0.125, 0.5),
        (0.25, 1.0),
        (0.375, 1.5),
        (0.5, 1.5),
        (0.625, 1.5),
        (0.75, 1.5),
        (0.75, 1.5),
        (0.75, 1.5),
    ]


def test_ramp_credits_at_most_max_step_s():
    cfg = PolicyConfig(max_linear_accel=1.0, max_step_s=0.125, max_linear=2.0)
    p = policy(table(go={"linear_x": 1.0}), cfg)
    p.command(0.0)
    p.on_label("go", 5.0)
    assert p.command(5.0).linear_x == 0.125  # 5 s since the last call, but only 0.125 s is credited


def test_stops_and_slowing_down_are_immediate():
    cfg = PolicyConfig(max_linear_accel=1.0, max_angular_accel=1.0, max_linear=2.0, max_step_s=1.0)
    p = policy(table(fast={"linear_x": 1.0}, slow={"linear_x": 0.25}, back={"linear_x": -0.5}), cfg)
    p.on_label("fast", 0.0)
    p.command(0.0)
    p.on_label("fast", 1.0)
    assert p.command(1.0).linear_x == 1.0
    p.on_label("slow", 1.125)
    assert p.command(1.125).linear_x == 0.25  # slowing down: no ramp
    p.on_label("back", 1.25)
    assert p.command(1.25).linear_x == -0.125  # reversing: through zero at once, then ramp
    p.on_label("unknown", 1.375)
    assert p.command(1.375).is_zero  # unknown: immediate
    p.on_label("fast", 1.5)
    assert p.command(1.5).linear_x == 0.125  # ramps again from zero
    p.set_enabled(False)
    assert p.command(1.625).is_zero  # disable: immediate
    p.set_enabled(True)
    p.on_label("fast", 1.75)
    assert p.command(1.75).linear_x == 0.125
    assert p.command(2.25).is_zero and p.last_command.reason == STALE  # stale: immediate


def test_min_score_threshold():
    p = policy(config=PolicyConfig(min_score=0.75, max_linear_accel=0.0))
    p.on_label("free", 0.0, score=0.5)
    assert p.command(0.0).reason == LOW_SCORE
    p.on_label("free", 0.1, score=0.75)
    assert p.command(0.1).linear_x == 0.15
    p.on_label("free", 0.2)  # no score: cannot meet the threshold
    assert p.command(0.2).reason == LOW_SCORE
    p.on_label("unknown", 0.3, score=0.1)
    assert p.command(0.3).reason == UNKNOWN  # unknown outranks low-score
    p.set_config(min_score=0.0)
    p.on_label("free", 0.4)
    assert p.command(0.4).reason == MOVING


def test_low_score_follows_the_unknown_labels_action_and_never_latches():
    searching = load_action_table({"actions": {"free": {"linear_x": 0.15}, "unknown": {"angular_z": 0.5}}})
    p = policy(searching, config=PolicyConfig(min_score=0.6, max_linear_accel=0.0, max_angular_accel=0.0))
    p.on_label("free", 0.0, score=0.3)
    cmd = p.command(0.0)
    assert (cmd.linear_x, cmd.angular_z, cmd.reason) == (0.0, 0.5, MOVING)  # as if "unknown": search
    p.on_label("free", 0.1, score=0.9)
    assert p.command(0.1).linear_x == 0.15  # a confident label moves again at once
    stops = policy(config=PolicyConfig(min_score=0.6, max_linear_accel=0.0))  # unknown not mapped: stop
    stops.on_label("free", 0.0, score=0.3)
    assert stops.command(0.0).reason == LOW_SCORE
    stops.on_label("free", 0.1, score=0.61)
    assert stops.command(0.1).reason == MOVING


def test_time_going_backwards_does_not_accelerate():
    cfg = PolicyConfig(max_linear_accel=1.0, max_linear=2.0, max_step_s=1.0)
    p = policy(table(go={"linear_x": 1.0}), cfg)
    p.on_label("go", 1.0)
    p.command(1.0)
    p.on_label("go", 1.125)
    assert p.command(1.125).linear_x == 0.125
    p.on_label("go", 1.125)
    assert p.command(0.5).linear_x == 0.125  # dt < 0 counts as 0


def test_class_table_mismatch_names_what_the_model_and_the_table_do_not_share():
    built_in = load_action_table(COLLISION_AVOIDANCE)
    none = class_table_mismatch(("circle", "square", "triangle"), built_in)
    assert none.startswith("the model's classes and the action table share no names")
    assert "classes with no action: circle, square, triangle (they get stop)" in none
    assert "actions for classes the model doesn't have: free, blocked" in none
    some = class_table_mismatch(("free", "cat"), built_in)
    assert "share only some names (1 of the model's 2 classes have an action)" in some
    assert "classes with no action: cat" in some and "doesn't have: blocked" in some
    assert class_table_mismatch(("blocked", "free"), built_in) == ""  # order does not matter
    with_unknown = load_action_table({"actions": {"free": {"linear_x": 0.1}, "unknown": {"angular_z": 0.5}}})
    assert class_table_mismatch(("free",), with_unknown) == ""  # the unknown label is no model class
