"""``dli-perception up classify`` as a real process: labels arrive, and every way of stopping it ends cleanly.

The process runs camera_node (a folder of green frames), classifier_node (a nearest-colour model
directory, test/fixtures_models.py) and reaction_node (every class drives forward) in one
process; this test subscribes from its own context. Stopping with SIGINT, two SIGINTs 5 ms apart
and SIGTERM must end in exit code 0, no traceback, and a zero Twist as the last cmd_vel; so must
one SIGINT or two while it is still importing and starting (at moments read from /proc, as
test/teach/test_stop.py does for the teach station).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import pytest
from fixtures_models import build_colour_model_dir, solid
from geometry_msgs.msg import Twist
from graphutil import Collector, Spinner, entry_point, graph_client, stop_and_check, wait_for
from procutil import wait_stage

from dli_perception import cli
from dli_perception.nodes.qos import EVENTS

pytestmark = pytest.mark.graph
START_S = 60.0  # first label: process start, imports, discovery and model load on a loaded 2-core machine
DEADLINE_S = 20.0


def up_command() -> list[str]:
    """``dli-perception up`` by the console script once cli.COMMANDS has it, else ``python -m``."""
    if "dli_perception.commands.up" in cli.COMMANDS:
        return [entry_point("dli-perception"), "up"]
    return [sys.executable, "-m", "dli_perception.commands.up"]


class Runner:
    """``dli-perception up ...`` in its own session, output captured to files."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.stdout_path = workdir / "stdout.txt"
        self.stderr_path = workdir / "stderr.txt"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*up_command(), *args],
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def stop(self, mode: str) -> int:
        if mode == "int2":
            os.kill(self.proc.pid, signal.SIGINT)
            time.sleep(0.005)
            os.kill(self.proc.pid, signal.SIGINT)
        else:
            os.kill(self.proc.pid, signal.SIGINT if mode == "int" else signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    frames = root / "frames"
    frames.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(frames / f"{i}.png"), solid("green", 48, 64)[:, :, ::-1])
    actions = root / "all_forward.yaml"
    actions.write_text(
        "actions:\n"
        + "".join(f"  {c}:\n    linear_x: 0.1\n" for c in ("red", "green", "blue"))
        + "default: stop\nunknown_label: unknown\n"
    )
    return build_colour_model_dir(root / "model"), frames, actions


def _velocity(msg: Twist) -> tuple[float, float]:
    return (msg.linear.x, msg.angular.z)


@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_up_classify_labels_frames_and_stops_with_a_final_zero_twist(ros_context, scene, tmp_path, mode):
    model, frames, actions = scene
    ns = f"/up_{uuid.uuid4().hex[:8]}"
    runner = Runner(
        [
            "classify",
            f"model_dir:={model}",
            f"actions_file:={actions}",
            "start_enabled:=true",
            "source:=folder",
            f"path:={frames}",
            "width:=64",
            "height:=48",
            "-p",
            "classifier.backend:=onnxruntime",
            "-p",
            "classifier.threads:=1",
            "-p",
            "reaction.max_linear_accel:=0.0",
            "--namespace",
            ns,
        ],
        tmp_path,
    )
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")
    try:
        with Spinner(ros_context, cmds) as spinner:
            client = spinner.own(graph_client(ros_context, ns))
            moving = wait_for(lambda: any(_velocity(m) == (0.1, 0.0) for m in list(cmds.msgs)), START_S)
            assert moving, f"never moved; labels {client.history('label')[-5:]}\n{runner.output()}"
            assert runner.stop(mode) == 0, runner.output()
            assert wait_for(lambda: cmds.count() > 0 and _velocity(cmds.msgs[-1]) == (0.0, 0.0), DEADLINE_S), [
                _velocity(m) for m in cmds.msgs[-5:]
            ]
    finally:
        runner.kill()
    text = runner.output()
    assert "Traceback" not in text, text
    assert set(client.history("label")) == {"green"}, text
    assert "(in-process)" in text  # the classifier took the camera's frames by the in-process hand-off
    assert "classifier stopped after" in text and "camera released after" in text, text


@pytest.mark.parametrize("how", ["cli", "module"])
@pytest.mark.parametrize("stage", ["handlers", "rclpy-import", "rmw-start"])
@pytest.mark.parametrize("mode", ["int", "int2"])
def test_a_stop_while_importing_or_starting_exits_0_without_traceback(node_process, scene, tmp_path, how, stage, mode):
    model, frames, _ = scene
    ns = f"/upstop_{uuid.uuid4().hex[:8]}"
    args = ["classify", f"model_dir:={model}", "source:=folder", f"path:={frames}", "--namespace", ns]
    if how == "cli":
        proc = node_process("dli-perception", args=["up", *args], cwd=str(tmp_path))
    else:
        proc = node_process(sys.executable, args=["-m", "dli_perception.commands.up", *args], cwd=str(tmp_path))
    assert wait_stage(proc.proc, stage, START_S), f"ended before {stage}:\n{proc.output()[-4000:]}"
    assert stop_and_check(proc, mode, timeout=30.0) == 0, proc.output()[-4000:]
    assert "Traceback" not in proc.stderr(), proc.stderr()[-4000:]
