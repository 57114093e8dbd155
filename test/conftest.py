"""Shared fixtures: an isolated ROS domain per test session, private rclpy contexts, node processes."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLCON = Path(sys.prefix) / "bin" / "colcon"
sys.path.insert(0, str(REPO / "test"))

# One ROS domain per test session, discovery kept on this host, and the package's Fast DDS
# profile, all set before any rclpy context exists in this process or its children.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1") if os.environ.get("ROS_DISTRO") == "humble" else None
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

from dli_perception import transport  # noqa: E402

transport.apply_default_profile()

# CI's skip policy (DLI_FAIL_ON_SKIP=1: a skip outside the hardware allowlist fails; test/skip_policy.py).
from skip_policy import (  # noqa: E402,F401
    pytest_make_collect_report,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)

# The ROS graph tests CI runs again with every other supported distribution's wheels (.ci/run: Jazzy):
# every test marked ``graph`` plus these files and folders. They get the marker ``distro``, so
# ``pytest -m distro`` runs them and ``pytest -m distro --collect-only -q`` lists them.
DISTRO_SUBSET = (
    "test/nodes/",
    "test/test_entry_points.py",
    "test/test_cross_distro.py",
    "test/test_colcon_build.py",
    "test/test_launch_and_config.py",
    "test/test_launch_runs.py",
    "test/test_transport.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve()
        rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else ""
        if item.get_closest_marker("graph") is not None or rel.startswith(DISTRO_SUBSET):
            item.add_marker(pytest.mark.distro)


@pytest.fixture
def ros_context():
    """A private, initialised rclpy Context (no signal handlers), shut down after the test."""
    from graphutil import new_context

    ctx = new_context()
    yield ctx
    ctx.try_shutdown()


@pytest.fixture
def cli_run(capsys):
    """Run the real ``dli-perception`` main in this process; ``cli_run(*argv)`` returns (rc, stdout, stderr)."""
    from dli_perception import cli

    def call(*argv: object) -> tuple[int, str, str]:
        rc = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return call


@pytest.fixture
def node_process():
    """Start node entry points as real processes; every one left is stopped at teardown."""
    from graphutil import NodeProcess

    started: list[NodeProcess] = []

    def start(executable: str, *ros_args: str, **kw) -> NodeProcess:
        proc = NodeProcess(executable, list(ros_args), **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def copy_sources(dest: Path) -> Path:
    """Copy the package's sources (git's tracked and untracked, not ignored, files) into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="session")
def colcon_workspace(tmp_path_factory) -> Path:
    """A colcon workspace with a copy of this package in src/."""
    if not COLCON.exists():
        pytest.skip("colcon-common-extensions is not installed")
    ws = tmp_path_factory.mktemp("ws")
    copy_sources(ws / "src" / "dli_perception")
    return ws


def run_colcon(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLCON_HOME": str(ws / ".colcon"), "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run([str(COLCON), *args], cwd=ws, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def colcon_installed(colcon_workspace) -> Path:
    """``colcon build`` of the package; returns install/dli_perception."""
    out = run_colcon(colcon_workspace, "build", "--event-handlers", "console_direct-")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return colcon_workspace / "install" / "dli_perception"


def installed_env(installed: Path) -> dict:
    """Environment entries that make a colcon install of the package importable and indexed."""
    site = next((installed / "lib").glob("python3*/site-packages"))
    return {
        "PYTHONPATH": f"{site}:{os.environ.get('PYTHONPATH', '')}",
        "AMENT_PREFIX_PATH": f"{installed}:{os.environ.get('AMENT_PREFIX_PATH', '')}",
        "FASTDDS_DEFAULT_PROFILES_FILE": "",
        "FASTRTPS_DEFAULT_PROFILES_FILE": "",  # the variable Fast DDS 2 (Humble, Jazzy) reads
    }


SCENE_CLASSES = ["free", "blocked"]
SCENE_SEED = 3


@pytest.fixture
def one_torch_thread():
    """torch on one thread during the test (two shared cores: one thread is faster than two spinning ones)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_scene_model(tmp_path_factory) -> Path:
    """A model dir trained here (head mode, random backbone weights) on synthetic free/blocked scenes.

    The camera's synthetic source draws the same classes, so a classifier using this model must
    name the scene on screen. Shared by the tests that need a really trained model (~25 s).
    """
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("torch")
    from dli_perception.core.export import export_model_dir
    from dli_perception.core.preprocess import PreprocessConfig
    from dli_perception.core.synthetic import SyntheticScenes, iter_samples
    from dli_perception.core.training import TrainConfig, train

    root = tmp_path_factory.mktemp("trained")
    scenes = SyntheticScenes(SCENE_CLASSES, width=64, height=48, seed=SCENE_SEED)
    for name, index, image in iter_samples(scenes, per_class=16):
        (root / "dataset" / name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "dataset" / name / f"{index:03d}.png"), image[:, :, ::-1])
    config = TrainConfig(
        mode="head",
        weights="none",
        epochs=40,
        lr=0.05,
        preprocess=PreprocessConfig(size=64),
        num_workers=0,
        device="cpu",
        early_stop_patience=0,
        augment=False,
        batch_size=16,
    )
    result = train(root / "dataset", config)
    assert result.summary()["best_val_acc"] >= 0.8, result.summary()
    return export_model_dir(result, root / "model", report=False)
