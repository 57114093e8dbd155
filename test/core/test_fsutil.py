"""Atomic writes: a file or directory is replaced completely or left as it was."""

from __future__ import annotations

import os

import pytest

from dli_perception.core.fsutil import atomic_open, atomic_write_bytes, replace_dir, sha256_file


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_failure_inside_the_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write(b"half")
            raise RuntimeError("disk went away")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_write_into_a_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "missing" / "a.bin", b"x")
    assert os.listdir(tmp_path) == []


def test_replace_dir_swaps_whole_directories(tmp_path):
    dest = tmp_path / "model"
    replace_dir(lambda d: (d / "v").write_text("1"), dest)
    replace_dir(lambda d: (d / "v").write_text("2"), dest)
    assert (dest / "v").read_text() == "2"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_replace_dir_failure_keeps_the_old_directory(tmp_path):
    dest = tmp_path / "model"
    replace_dir(lambda d: (d / "v").write_text("good"), dest)

    def broken(d):
        (d / "v").write_text("partial")
        raise ValueError("export failed")

    with pytest.raises(ValueError):
        replace_dir(broken, dest)
    assert (dest / "v").read_text() == "good"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_sha256_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
