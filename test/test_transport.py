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


# A frame's worth of buffers allocated and freed like a take does (C message, bytes, array), on the
# main thread and on a worker thread (the classifier's and camera's frames live on worker threads);
# prints the page faults per round on each.
_FAULTS_SCRIPT = """
import resource, sys, threading
import numpy as np
from dli_perception import transport
tuned = transport.keep_frame_buffers()
def rounds(out):
    for i in range(23):
        if i == 3:
            start = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        bufs = [np.ones(1280 * 720 * 3, np.uint8) for _ in range(4)]
        del bufs
    out.append((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - start) / 20)
main, worker = [], []
rounds(main)
t = threading.Thread(target=rounds, args=(worker,))
t.start()
t.join()
print(tuned, main[0], worker[0])
"""


def _faults(extra_env: dict) -> tuple[str, float, float]:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    tuned, main, worker = out.stdout.split()
    return tuned, float(main), float(worker)


@pytest.mark.skipif(not transport.sys.platform.startswith("linux"), reason="glibc's mallopt exists only on Linux")
def test_keep_frame_buffers_stops_page_faults_on_every_frame():
    tuned, main, worker = _faults({})
    assert tuned == "True"
    # Untuned, glibc maps each HD buffer afresh and its 675 pages fault in again on every round.
    untuned, main0, worker0 = _faults({transport.ALLOCATOR_OPT_OUT_ENV: "0"})
    assert untuned == "False"
    assert main0 > 1000 and worker0 > 1000, (main0, worker0)
    assert main < 50 and worker < 50, (main, worker)


@pytest.mark.parametrize(
    "env",
    [
        {transport.ALLOCATOR_OPT_OUT_ENV: "0"},
        {"MALLOC_TRIM_THRESHOLD_": "1000"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4096"},
    ],
)
def test_keep_frame_buffers_leaves_a_user_choice_alone(env):
    assert transport.keep_frame_buffers(dict(env)) is False
