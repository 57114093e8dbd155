"""The XY steering policy: geometry, gains, bias, clamps, the D term, and the table policy's safety rules."""

from __future__ import annotations

import math

import pytest

from dli_perception.core.reaction import PolicyConfig
from dli_perception.core.steering import (
    BAD_TARGET,
    NO_TARGET,
    SteeringConfig,
    SteeringPolicy,
    target_angle,
)
from dli_perception.errors import ConfigError

NO_RAMP = PolicyConfig(max_linear_accel=0.0, max_angular_accel=0.0)


def _policy(config: PolicyConfig = NO_RAMP, **gains) -> SteeringPolicy:
    return SteeringPolicy(SteeringConfig(**gains), config, enabled=True)


def test_target_angle_geometry():
    assert target_angle(0.0, 0.0) == 0.0  # centre: straight ahead
    assert target_angle(0.0, -1.0) == 0.0 and target_angle(0.0, 1.0) == 0.0  # on the centre line
    assert target_angle(0.5, 0.0) == pytest.approx(math.atan2(0.5, 0.5)) == pytest.approx(math.pi / 4)
    assert target_angle(-0.5, 0.0) == pytest.approx(-math.pi / 4)  # left is negative
    assert target_angle(1.0, -1.0) == pytest.approx(math.pi / 4)  # far right: x 1, forward 1
    # the same sideways offset is a sharper angle nearer the robot (the bottom edge)
    assert target_angle(0.3, 0.8) > target_angle(0.3, 0.0) > target_angle(0.3, -0.8) > 0
    assert target_angle(0.3, 1.0) == pytest.approx(math.pi / 2)
    assert target_angle(1.2, -1.5) == target_angle(1.0, -1.0)  # clamped onto the image


def test_p_gain_speed_and_turn_direction():
    policy = _policy(speed=0.2, kp=2.0, kd=0.0, max_steer=10.0)
    policy.on_target(0.5, 0.0, now=0.0)  # 45 degrees to the right
    cmd = policy.command(0.01)
    assert cmd.reason == "moving" and cmd.label is None
    assert cmd.linear_x == pytest.approx(0.2)
    assert cmd.angular_z == pytest.approx(-2.0 * math.pi / 4)  # clockwise, towards the target
    policy.on_target(-0.5, 0.0, now=0.02)
    assert policy.command(0.03).angular_z == pytest.approx(2.0 * math.pi / 4)
    policy.on_target(0.0, 0.5, now=0.04)
    assert policy.command(0.05).angular_z == 0.0


def test_bias_is_added_to_every_command():
    policy = _policy(kp=1.0, kd=0.0, bias=0.1, max_steer=10.0)
    policy.on_target(0.0, 0.0, now=0.0)
    assert policy.command(0.01).angular_z == pytest.approx(0.1)
    policy.on_target(0.5, 0.0, now=0.02)
    assert policy.command(0.03).angular_z == pytest.approx(0.1 - math.pi / 4)


def test_angular_command_is_clamped_by_max_steer_then_max_angular():
    policy = _policy(kp=5.0, kd=0.0, max_steer=1.0)
    policy.on_target(0.9, 0.9, now=0.0)
    assert policy.command(0.01).angular_z == -1.0
    policy.on_target(-0.9, 0.9, now=0.02)
    assert policy.command(0.03).angular_z == 1.0
    policy.set_config(max_angular=0.4, max_linear=0.1)
    policy.set_steering(speed=0.3)
    cmd = policy.command(0.04)
    assert (cmd.linear_x, cmd.angular_z) == (0.1, 0.4)


def test_d_term_acts_on_the_change_of_angle_and_restarts_after_a_stop():
    policy = _policy(kp=1.0, kd=0.5, max_steer=10.0)
    a1, a2 = target_angle(0.2, 0.0), target_angle(0.6, 0.0)
    policy.on_target(0.2, 0.0, now=0.0)
    assert policy.command(0.05).angular_z == pytest.approx(-a1)  # first target: P alone
    policy.on_target(0.6, 0.0, now=0.1)
    assert policy.command(0.15).angular_z == pytest.approx(-(a2 + 0.5 * (a2 - a1)))  # swinging right: more turn
    policy.on_target(0.6, 0.0, now=0.2)
    assert policy.command(0.25).angular_z == pytest.approx(-a2)  # steady: D is 0
    policy.on_target(0.2, 0.0, now=0.3)
    assert policy.command(0.35).angular_z == pytest.approx(-(a1 + 0.5 * (a1 - a2)))  # swinging back: damped
    # after a stale gap the D term starts again from 0
    assert policy.command(0.9).reason == "stale"
    policy.on_target(0.6, 0.0, now=1.0)
    assert policy.command(1.05).angular_z == pytest.approx(-a2)
    # and after a disable
    policy.set_enabled(False)
    assert policy.command(1.1).reason == "disabled"
    policy.on_target(0.2, 0.0, now=1.15)
    policy.set_enabled(True)
    assert policy.command(1.2).angular_z == pytest.approx(-a1)


def test_watchdog_stops_a_stale_target_with_zero_at_the_deadline():
    policy = _policy(PolicyConfig(stale_timeout_s=0.5, max_linear_accel=0.0, max_angular_accel=0.0), kd=0.0)
    assert policy.command(0.0).reason == NO_TARGET and policy.last_command.is_zero
    assert policy.deadline() is None
    policy.on_target(0.3, 0.0, now=1.0)
    assert policy.deadline() == pytest.approx(1.5)
    assert not policy.command(1.49).is_zero
    cmd = policy.command(1.5)
    assert cmd.is_zero and cmd.reason == "stale"
    assert policy.counters.stale_events == 1
    assert policy.command(1.6).reason == "stale" and policy.counters.stale_events == 1  # one event per stop
    assert policy.label_age(1.6) == pytest.approx(0.6) and policy.target_point == (0.3, 0.0)
    policy.on_target(0.3, 0.0, now=2.0)
    assert not policy.command(2.01).is_zero


def test_ramp_limits_speed_up_but_every_stop_is_immediate():
    cfg = PolicyConfig(max_linear_accel=0.5, max_angular_accel=4.0, max_step_s=0.1)
    policy = _policy(cfg, speed=0.2, kp=2.0, kd=0.0, max_steer=10.0)
    policy.on_target(0.5, 0.0, now=0.0)
    speeds = []
    for i in range(1, 12):
        policy.on_target(0.5, 0.0, now=i * 0.05)
        speeds.append(policy.command(i * 0.05))
    assert speeds[0].linear_x == 0.0  # the first call has no time to grow
    steps = [b.linear_x - a.linear_x for a, b in zip(speeds, speeds[1:], strict=False)]
    assert all(s <= 0.5 * 0.05 + 1e-9 for s in steps) and speeds[-1].linear_x == pytest.approx(0.2)
    turns = [abs(c.angular_z) for c in speeds]
    assert all(b - a <= 4.0 * 0.05 + 1e-9 for a, b in zip(turns, turns[1:], strict=False))
    assert turns[-1] == pytest.approx(2.0 * math.pi / 4)
    policy.set_enabled(False)
    assert policy.command(0.6).is_zero  # no ramp down


def test_enable_gate_starts_disabled_and_zero():
    policy = SteeringPolicy(SteeringConfig(), NO_RAMP)
    assert not policy.enabled and policy.last_command.reason == "disabled"
    policy.on_target(0.5, 0.0, now=0.0)
    cmd = policy.command(0.01)
    assert cmd.is_zero and cmd.reason == "disabled"
    policy.set_enabled(True)
    assert not policy.command(0.02).is_zero


def test_bad_points_stop_until_a_good_one_arrives():
    policy = _policy(kd=0.0)
    policy.on_target(0.5, 0.0, now=0.0)
    assert not policy.command(0.01).is_zero
    for bad in (math.nan, math.inf):
        policy.on_target(bad, 0.0, now=0.02)
        cmd = policy.command(0.03)
        assert cmd.is_zero and cmd.reason == BAD_TARGET
    assert policy.counters.bad_targets == 2 and policy.counters.labels_received == 3
    policy.on_target(0.1, 0.1, now=0.04)
    assert not policy.command(0.05).is_zero


@pytest.mark.parametrize("field,value", [("speed", -0.1), ("kp", -1.0), ("kd", math.nan), ("max_steer", -1.0)])
def test_bad_gains_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        SteeringConfig(**{field: value})
