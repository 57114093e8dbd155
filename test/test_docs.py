"""The README documents what the package has: every node's parameters, every CLI subcommand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_readme_parameter_tables_match_the_nodes():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "node_docs.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr


def test_readme_names_every_cli_subcommand():
    from dli_perception.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    readme = (REPO / "README.md").read_text()
    missing = [name for name in sub.choices if f"dli-perception {name}" not in readme]
    assert not missing, f"README.md does not show these subcommands: {missing}"


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in readme and ".venv/bin/python -m pytest" in ci
    assert "bash scripts/setup_venv.sh" in readme and "bash scripts/setup_venv.sh" in ci
