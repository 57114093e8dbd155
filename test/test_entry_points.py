"""Every console script of setup.py starts with this venv's ROS 2 and ends cleanly; the CLI answers.

Part of the tests CI repeats with the Jazzy wheels (marker ``distro``): a Kilted-only rclpy call
anywhere on a node's start-up or shutdown path, or in the CLI, fails here.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from graphutil import NodeProcess, entry_point, wait_for
from rclpy.node import Node

from dli_perception import cli

REPO = Path(__file__).resolve().parent.parent
DISCOVERY_S = 30.0  # deadline for a new process's node to appear in the graph (took up to ~3 s here)


def _setup_nodes() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no NODES table")


NODES = _setup_nodes()
# Start-up parameters that keep a node small and inside the test's folders (HOME is a tmp dir too).
NODE_ARGS = {"camera_node": ["width:=32", "height:=24", "fps:=5.0"]}


@pytest.mark.graph
@pytest.mark.parametrize("executable", NODES)
def test_node_starts_joins_the_graph_and_survives_a_late_second_sigint(executable, ros_context, tmp_path):
    """One SIGINT, then another 0.2 s later (as launch may send it, while the process exits): exit 0."""
    ns = f"/entry_{uuid.uuid4().hex[:8]}"
    ros_args = ["-r", f"__ns:={ns}"]
    for value in NODE_ARGS.get(executable, []):
        ros_args += ["-p", value]
    proc = NodeProcess(executable, ros_args, env={"HOME": str(tmp_path)}, cwd=str(tmp_path))
    probe = Node("entry_point_probe", context=ros_context)
    try:
        assert wait_for(
            lambda: (executable, ns) in probe.get_node_names_and_namespaces() or proc.proc.poll() is not None,
            timeout=DISCOVERY_S,
        ), proc.output()[-3000:]
        assert proc.proc.poll() is None, f"{executable} exited at start-up:\n{proc.output()[-3000:]}"
        proc.send(signal.SIGINT)
        time.sleep(0.2)
        proc.send(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.output()[-3000:]
        assert "Traceback" not in proc.stderr(), proc.stderr()[-3000:]
    finally:
        probe.destroy_node()
        proc.kill()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([entry_point("dli-perception"), *args], capture_output=True, text=True, timeout=120)


def test_cli_help_lists_every_subcommand():
    out = _run_cli("--help")
    assert out.returncode == 0, out.stderr
    names = {primary for module in cli.COMMANDS for primary in _subcommands_of(module).values()}
    assert len(names) >= len(cli.COMMANDS)
    for name in names:
        assert name in out.stdout, f"{name} missing from --help:\n{out.stdout}"


def _subcommands_of(module: str) -> dict[str, str]:
    """``{name or alias: primary name}`` of the subcommands that ``module``'s ``register`` adds."""
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers()
    importlib.import_module(module).register(sub)
    return {name: sub_parser.prog.split()[-1] for name, sub_parser in sub.choices.items()}


@pytest.mark.parametrize("module", cli.COMMANDS)
def test_every_subcommand_has_help(module, capsys):
    names = _subcommands_of(module)
    assert names, f"{module} registers no subcommand"
    for name, primary in names.items():
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0
        assert f"dli-perception {primary}" in capsys.readouterr().out


def test_cli_info_reports_this_venvs_rclpy():
    out = _run_cli("info")
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.strip().startswith("rclpy"))
    assert "not available" not in line, out.stdout
    assert "Fast DDS profile" in out.stdout and sys.version.split()[0] in out.stdout
