"""The Fast DDS profile reaches Fast DDS 3 (Kilted) and Fast DDS 2 (Humble, Jazzy); a user's choice wins."""

from __future__ import annotations

from dli_perception import transport
from dli_perception.transport import LEGACY_PROFILE_ENV, OPT_OUT_ENV, PROFILE_ENV, apply_default_profile


def test_shipped_profile_goes_into_both_variables():
    env: dict = {}
    path = apply_default_profile(env)
    assert path == str(transport.default_profile_path())
    assert env == {PROFILE_ENV: path, LEGACY_PROFILE_ENV: path}
    assert "<useBuiltinTransports>false" in open(path).read()


def test_a_users_profile_in_either_variable_wins_and_is_mirrored(tmp_path):
    mine = str(tmp_path / "mine.xml")
    for name, other in ((PROFILE_ENV, LEGACY_PROFILE_ENV), (LEGACY_PROFILE_ENV, PROFILE_ENV)):
        env = {name: mine}
        assert apply_default_profile(env) == mine
        assert env == {name: mine, other: mine}


def test_two_different_user_profiles_are_both_kept(tmp_path):
    env = {PROFILE_ENV: "/a/fastdds3.xml", LEGACY_PROFILE_ENV: "/b/fastdds2.xml"}
    assert apply_default_profile(env) == "/a/fastdds3.xml"
    assert env == {PROFILE_ENV: "/a/fastdds3.xml", LEGACY_PROFILE_ENV: "/b/fastdds2.xml"}


def test_empty_variables_count_as_unset():
    env = {PROFILE_ENV: "", LEGACY_PROFILE_ENV: ""}
    path = apply_default_profile(env)
    assert env[PROFILE_ENV] == env[LEGACY_PROFILE_ENV] == path == str(transport.default_profile_path())


def test_opt_out_sets_nothing():
    env = {OPT_OUT_ENV: "0"}
    assert apply_default_profile(env) is None
    assert env == {OPT_OUT_ENV: "0"}
    env = {OPT_OUT_ENV: "0", LEGACY_PROFILE_ENV: "/b/fastdds2.xml"}
    assert apply_default_profile(env) == "/b/fastdds2.xml"
    assert PROFILE_ENV not in env
