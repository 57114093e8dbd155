"""The on-robot path: ``colcon build`` of the package as ament_python, and its installed entry points start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphutil import NodeProcess, stop_and_check, wait_for

REPO = Path(__file__).resolve().parent.parent
COLCON = Path(sys.prefix) / "bin" / "colcon"

pytestmark = pytest.mark.skipif(not COLCON.exists(), reason="colcon-common-extensions is not installed")


def _copy_sources(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    _copy_sources(ws / "src" / "dli_perception")
    return ws


def _colcon(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLCON_HOME": str(ws / ".colcon"), "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run([str(COLCON), *args], cwd=ws, env=env, capture_output=True, text=True, timeout=600)


def test_colcon_lists_an_ament_python_package(workspace):
    out = _colcon(workspace, "list")
    assert out.returncode == 0, out.stderr
    assert "dli_perception" in out.stdout and "(ros.ament_python)" in out.stdout, out.stdout


@pytest.fixture(scope="module")
def installed(workspace) -> Path:
    out = _colcon(workspace, "build", "--event-handlers", "console_direct-")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workspace / "install" / "dli_perception"


def test_build_installs_index_launch_config_and_executables(installed):
    share = installed / "share" / "dli_perception"
    assert (installed / "share" / "ament_index" / "resource_index" / "packages" / "dli_perception").is_file()
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "camera.launch.py").is_file()
    assert (share / "config" / "camera.yaml").is_file()
    assert (share / "config" / "fastdds_shm.xml").is_file()
    assert os.access(installed / "lib" / "dli_perception" / "camera_node", os.X_OK)


def _installed_env(installed: Path) -> dict:
    site = next((installed / "lib").glob("python3*/site-packages"))
    return {
        "PYTHONPATH": f"{site}:{os.environ.get('PYTHONPATH', '')}",
        "AMENT_PREFIX_PATH": f"{installed}:{os.environ.get('AMENT_PREFIX_PATH', '')}",
        "FASTDDS_DEFAULT_PROFILES_FILE": "",
    }


def test_installed_package_finds_its_share_through_the_ament_index(installed):
    env = {**os.environ, **_installed_env(installed)}
    out = subprocess.run(
        [sys.executable, "-c", "import dli_perception, dli_perception.transport as t; print(dli_perception.__file__);"
         " print(t.share_dir())"],
        env=env, capture_output=True, text=True, timeout=60, cwd=installed,
    )
    module_file, share = out.stdout.split()
    assert module_file.startswith(str(installed)), module_file
    assert Path(share) == installed / "share" / "dli_perception"


def test_installed_camera_node_starts_publishes_and_exits_cleanly(installed):
    proc = NodeProcess(
        str(installed / "lib" / "dli_perception" / "camera_node"),
        ["-p", "width:=64", "-p", "height:=48", "-p", "fps:=10.0"],
        env=_installed_env(installed),
        cwd=str(installed),
    )
    try:
        assert wait_for(lambda: "publishing synthetic frames" in proc.output(), timeout=30), proc.output()
        time.sleep(0.5)
        rc = stop_and_check(proc, "int")
        assert rc == 0, proc.output()
        assert "Traceback" not in proc.stderr()
    finally:
        proc.kill()
