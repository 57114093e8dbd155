"""The teach station installs with its page under colcon too (static files are package data)."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO

STATIC = sorted(p.name for p in (REPO / "dli_perception" / "teach" / "static").iterdir())


def test_static_files_and_launch_file_are_installed(colcon_installed):
    installed = list(colcon_installed.rglob("dli_perception/teach/static"))
    assert installed, f"no dli_perception/teach/static under {colcon_installed}"
    assert sorted(p.name for p in installed[0].iterdir()) == STATIC
    assert (colcon_installed / "share" / "dli_perception" / "launch" / "teach.launch.py").is_file()


def test_page_files_are_what_the_server_serves():
    from dli_perception.teach.routes import static_file

    assert {"index.html", "teach.js", "teach.css"} <= set(STATIC)
    for name in STATIC:
        assert static_file(name) == Path(REPO / "dli_perception" / "teach" / "static" / name).read_bytes()
