"""The on-robot path: ``colcon build`` of the package as ament_python, and its installed entry points start."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import installed_env, run_colcon
from graphutil import Collector, NodeProcess, Spinner, stop_and_check, wait_for
from sensor_msgs.msg import Image

from dli_perception.nodes.qos import SENSOR_DATA

DISCOVERY_S = 30.0  # first frame across processes (discovery took up to ~3 s here, more on a loaded machine)


def test_colcon_lists_an_ament_python_package(colcon_workspace):
    out = run_colcon(colcon_workspace, "list")
    assert out.returncode == 0, out.stderr
    assert "dli_perception" in out.stdout and "(ros.ament_python)" in out.stdout, out.stdout


def test_build_installs_index_launch_config_and_executables(colcon_installed):
    share = colcon_installed / "share" / "dli_perception"
    assert (colcon_installed / "share" / "ament_index" / "resource_index" / "packages" / "dli_perception").is_file()
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "camera.launch.py").is_file()
    assert (share / "config" / "camera.yaml").is_file()
    assert (share / "config" / "fastdds_shm.xml").is_file()
    assert os.access(colcon_installed / "lib" / "dli_perception" / "camera_node", os.X_OK)


def test_installed_package_finds_its_share_through_the_ament_index(colcon_installed):
    env = {**os.environ, **installed_env(colcon_installed)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dli_perception, dli_perception.transport as t; print(dli_perception.__file__);"
            " print(t.share_dir())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=colcon_installed,
    )
    module_file, share = out.stdout.split()
    assert module_file.startswith(str(colcon_installed)), module_file
    assert Path(share) == colcon_installed / "share" / "dli_perception"


def test_installed_camera_node_starts_publishes_and_exits_cleanly(colcon_installed, ros_context):
    """Frames from the installed executable reach a subscriber here: size, encoding, data, rising stamps."""
    tag = uuid.uuid4().hex[:8]
    ns, frame_id = f"/colcon_{tag}", f"colcon_cam_{tag}"  # only this process publishes here, with this frame_id
    proc = NodeProcess(
        str(colcon_installed / "lib" / "dli_perception" / "camera_node"),
        ["-p", "width:=64", "-p", "height:=48", "-p", "fps:=10.0", "-p", f"frame_id:={frame_id}", "-r", f"__ns:={ns}"],
        env=installed_env(colcon_installed),
        cwd=str(colcon_installed),
    )
    images = Collector(ros_context, Image, f"{ns}/image_raw", SENSOR_DATA, name="colcon_images")
    try:
        with Spinner(ros_context, images):
            assert wait_for(lambda: images.count() >= 5, timeout=DISCOVERY_S), proc.output()
        msgs = list(images.msgs)
        for msg in msgs:
            assert (msg.width, msg.height, msg.encoding, msg.step) == (64, 48, "rgb8", 64 * 3)
            assert len(msg.data) == 64 * 48 * 3 and msg.header.frame_id == frame_id
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert any(max(m.data) > min(m.data) for m in msgs)  # a scene, not an empty buffer
        rc = stop_and_check(proc, "int")
        assert rc == 0, proc.output()
        assert "Traceback" not in proc.stderr()
    finally:
        proc.kill()
