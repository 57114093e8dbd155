"""The Fast DDS profile reaches Fast DDS 3 (Kilted) and Fast DDS 2 (Humble, Jazzy); a user's choice wins."""

from __future__ import annotations

import importlib.metadata

import pytest

from dli_perception import transport
from dli_perception.transport import (
    LEGACY_PROFILE_ENV,
    OPT_OUT_ENV,
    PROFILE_ENV,
    apply_default_profile,
    fastdds_major,
)

FAST_DDS_2 = {"ROS_DISTRO": "jazzy"}
FAST_DDS_3 = {"ROS_DISTRO": "kilted"}


def test_fast_dds_2_gets_the_shipped_profile_in_both_variables():
    env = dict(FAST_DDS_2)
    path = apply_default_profile(env)
    assert path == str(transport.default_profile_path())
    assert env == {**FAST_DDS_2, PROFILE_ENV: path, LEGACY_PROFILE_ENV: path}
    assert "<useBuiltinTransports>false" in open(path).read()


def test_fast_dds_3_gets_only_its_own_variable():
    """Fast DDS 3 warns at every start when the Fast DDS 2 variable is set."""
    env = dict(FAST_DDS_3)
    path = apply_default_profile(env)
    assert env == {**FAST_DDS_3, PROFILE_ENV: path}


@pytest.mark.parametrize("distro, major", [("humble", 2), ("jazzy", 2), ("kilted", 3), ("rolling", 3)])
def test_fast_dds_version_from_ros_distro(distro, major):
    assert fastdds_major({"ROS_DISTRO": distro}) == major


def test_fast_dds_version_from_the_installed_wheels():
    installed = {d: _installed(d) for d in ("ros-fastdds", "ros-fastrtps")}
    expected = 3 if installed["ros-fastdds"] else 2 if installed["ros-fastrtps"] else None
    assert fastdds_major({}) == expected


def test_a_users_profile_in_either_variable_wins_and_is_mirrored_for_fast_dds_2(tmp_path):
    mine = str(tmp_path / "mine.xml")
    for name, other in ((PROFILE_ENV, LEGACY_PROFILE_ENV), (LEGACY_PROFILE_ENV, PROFILE_ENV)):
        env = {**FAST_DDS_2, name: mine}
        assert apply_default_profile(env) == mine
        assert env == {**FAST_DDS_2, name: mine, other: mine}


def test_a_users_fast_dds_2_profile_reaches_fast_dds_3(tmp_path):
    mine = str(tmp_path / "mine.xml")
    env = {**FAST_DDS_3, LEGACY_PROFILE_ENV: mine}
    assert apply_default_profile(env) == mine
    assert env[PROFILE_ENV] == mine


def test_two_different_user_profiles_are_both_kept():
    env = {**FAST_DDS_2, PROFILE_ENV: "/a/fastdds3.xml", LEGACY_PROFILE_ENV: "/b/fastdds2.xml"}
    assert apply_default_profile(env) == "/a/fastdds3.xml"
    assert env[PROFILE_ENV] == "/a/fastdds3.xml" and env[LEGACY_PROFILE_ENV] == "/b/fastdds2.xml"


def test_empty_variables_count_as_unset():
    env = {**FAST_DDS_2, PROFILE_ENV: "", LEGACY_PROFILE_ENV: ""}
    path = apply_default_profile(env)
    assert env[PROFILE_ENV] == env[LEGACY_PROFILE_ENV] == path == str(transport.default_profile_path())


def test_opt_out_sets_nothing():
    env = {OPT_OUT_ENV: "0"}
    assert apply_default_profile(env) is None
    assert env == {OPT_OUT_ENV: "0"}
    env = {OPT_OUT_ENV: "0", LEGACY_PROFILE_ENV: "/b/fastdds2.xml"}
    assert apply_default_profile(env) == "/b/fastdds2.xml"
    assert PROFILE_ENV not in env


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
