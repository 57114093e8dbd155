"""The off-robot set-up (scripts/setup_venv.sh) fails when pip fails, and its check names what is missing.

pip runs for real against local, deliberately broken package sources (no network, nothing big is
installed): a requirement that exists nowhere, an index folder that does not exist, an empty venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import copy_sources

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "setup_venv.sh"
BOGUS = "dli-no-such-package-xyz"
PYTHON = getattr(sys, "_base_executable", sys.executable)  # the interpreter this venv was made from


def run_setup(*args: str, script: Path = SCRIPT, **env: str) -> subprocess.CompletedProcess:
    """Run the set-up script with pip kept off the network and off this machine's pip configuration."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "DLI_", "VIRTUAL_ENV"))}
    return subprocess.run(
        ["bash", str(script), *args],
        env={**base, "PYTHON": PYTHON, "PIP_CONFIG_FILE": os.devnull, "DLI_LAUNCH_WHEELS": "", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_rerun_on_a_complete_venv_fails_when_one_requirement_cannot_be_installed(tmp_path):
    # An existing venv that already sees every requirement (this venv's site-packages through a .pth
    # file), a copy of the package whose requirements name a package that exists nowhere, and pip with
    # no index: everything else is "already satisfied", so the bogus requirement is the only failure.
    tree = copy_sources(tmp_path / "src")
    with open(tree / "requirements" / "dev.txt", "a") as f:
        f.write(f"{BOGUS}\n")
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "complete_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    empty = tmp_path / "no_wheels"
    empty.mkdir()
    out = run_setup(
        "kilted",
        str(venv),
        script=tree / "scripts" / "setup_venv.sh",
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(empty),
        PIP_NO_BUILD_ISOLATION="0",  # pip's spelling for "build without isolation" (setuptools is there)
    )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Requirement already satisfied: torch" in text, text  # the rest really was satisfied
    assert f"No matching distribution found for {BOGUS}" in text, text
    assert "pip install failed with exit status 1" in text and "setup_venv: ready" not in text, text


@pytest.mark.slow
def test_a_new_venv_fails_when_the_package_index_is_missing_and_the_log_stays_readable(tmp_path):
    venv = tmp_path / "venv"
    missing = tmp_path / "no_such_index"
    out = run_setup("kilted", str(venv), PIP_INDEX_URL=missing.as_uri(), PIP_FIND_LINKS=str(tmp_path))
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "setup_venv: creating" in text and "pip install failed" in text and "setup_venv: ready" not in text
    assert "ERROR:" in text, text  # pip's own error is shown
    assert "WARNING: Location 'file:" not in text, text  # the one warning the script filters out
    # a second run on the now existing (incomplete) venv fails the same way
    again = run_setup("kilted", str(venv), PIP_INDEX_URL=missing.as_uri(), PIP_FIND_LINKS=str(tmp_path))
    assert again.returncode == 1 and "setup_venv: updating" in again.stdout, again.stdout + again.stderr


def test_the_check_lists_every_missing_module_and_program(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    out = run_setup("--check", "kilted", str(venv))
    assert out.returncode == 1, out.stdout + out.stderr
    for name in (
        "rclpy", "sensor_msgs.msg", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "cv2",
        "rosbags", "matplotlib", "tqdm", "yaml", "numpy", "pytest", "pytest_timeout", "hypothesis",
        "colcon_core", "catkin_pkg", "dli_perception",
    ):  # fmt: skip
        assert f"module {name} (ModuleNotFoundError" in out.stderr, (name, out.stderr)
    for program in ("colcon", "ruff", "dli-perception", "classifier_node"):
        assert f"program {venv}/bin/{program} (missing)" in out.stderr, (program, out.stderr)


def test_an_unknown_distribution_or_wheel_folder_is_a_usage_error(tmp_path):
    assert run_setup("humble", str(tmp_path / "v")).returncode == 2
    out = run_setup("kilted", str(tmp_path / "v"), DLI_LAUNCH_WHEELS=str(tmp_path))
    assert out.returncode == 2 and "holds no wheels" in out.stderr, out.stderr
    assert not (tmp_path / "v").exists()


@pytest.mark.slow
def test_this_venv_passes_the_check():
    # The venv running the tests: every module imports, every program runs (launch modules when present).
    out = run_setup("--check", "kilted", sys.prefix)
    assert out.returncode == 0, out.stdout + out.stderr
