"""The CI skip policy (test/skip_policy.py): only hardware skips pass; any other skip fails the run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from skip_policy import allowed_category

HERE = Path(__file__).resolve().parent

ALLOWED = {
    "no CUDA GPU here": "GPU",
    "this machine has a CUDA GPU": "GPU",
    "TensorRT and a GPU are usable here: auto would pick tensorrt": "GPU",
    "needs an NVIDIA driver": "GPU",
    "tensorrt is installed on this machine": "TensorRT",
    "TensorRT is not installed (it comes with JetPack)": "TensorRT",
    "no camera hardware on this machine": "camera",
    "no V4L2 device at /dev/video0": "camera",
}
REFUSED = (
    "launch_ros is not installed (no PyPI wheel): run on a robot",
    "colcon-common-extensions is not installed",
    "could not import 'onnxscript': No module named 'onnxscript'",
    "onnxruntime-gpu is not installed",
    "tensorrt-cu12 wheel missing",
    "needs root and permission to mount a 256 kB tmpfs",
    "no jazzy venv at .venv-jazzy (set DLI_JAZZY_VENV)",
    "dli_perception/commands/demo.py is not there",
    "flaky on a loaded machine",
    "chromium is not installed",
    "torch.distributed is not available",
    "",
)


@pytest.mark.parametrize("reason", sorted(ALLOWED))
def test_hardware_reasons_are_allowed(reason):
    assert allowed_category(reason) == ALLOWED[reason]


@pytest.mark.parametrize("reason", REFUSED)
def test_every_other_reason_is_refused(reason):
    assert allowed_category(reason) is None


def _run_suite(tmp_path: Path, fail_on_skip: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
        "from skip_policy import pytest_make_collect_report, pytest_runtest_makereport, pytest_terminal_summary\n"
    )
    (tmp_path / "test_items.py").write_text(
        textwrap.dedent(
            """
            import pytest

            def test_passes():
                pass

            def test_needs_gpu():
                pytest.skip("no CUDA GPU on this machine")

            def test_needs_package():
                pytest.skip("somepackage is not installed")

            @pytest.mark.skipif(True, reason="flaky")
            def test_marked_flaky():
                pass

            @pytest.fixture
            def needs_root():
                pytest.skip("needs root")

            def test_fixture_skip(needs_root):
                pass

            @pytest.mark.xfail(strict=True, reason="a known defect")
            def test_known_defect():
                assert False
            """
        )
    )
    (tmp_path / "test_missing_module.py").write_text(
        "import pytest\npytest.importorskip('dli_no_such_module')\n\ndef test_never_runs():\n    pass\n"
    )
    (tmp_path / "test_no_tensorrt.py").write_text(
        "import pytest\npytest.skip('TensorRT is not installed', allow_module_level=True)\n\n"
        "def test_never_runs():\n    pass\n"
    )
    env = {**os.environ, "DLI_FAIL_ON_SKIP": fail_on_skip}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_with_the_policy_every_disallowed_skip_fails_in_the_counts(tmp_path):
    out = _run_suite(tmp_path, "1")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    closing = text.strip().splitlines()[-1]
    # refused: a skip in the test, a skipif mark, a fixture skip (an error), a module skipped as a whole
    assert re.search(r"2 failed, 1 passed, 2 skipped, 1 xfailed, 2 errors", closing), text
    assert "skips (DLI_FAIL_ON_SKIP: 2 allowed, 4 refused)" in text, text
    for line in (
        "allowed (GPU): test_items.py::test_needs_gpu: no CUDA GPU on this machine",
        "allowed (TensorRT): test_no_tensorrt.py: TensorRT is not installed",
        "REFUSED (counted as failed): test_items.py::test_needs_package: somepackage is not installed",
        "REFUSED (counted as failed): test_items.py::test_marked_flaky: flaky",
        "REFUSED (counted as failed): test_items.py::test_fixture_skip: needs root",
        "REFUSED (counted as failed): test_missing_module.py: could not import 'dli_no_such_module'",
    ):
        assert line in text, (line, text)


def test_without_the_policy_skips_stay_skips(tmp_path):
    out = _run_suite(tmp_path, "0")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert re.search(r"1 passed, 6 skipped, 1 xfailed", text.strip().splitlines()[-1]), text
    assert "DLI_FAIL_ON_SKIP" not in text, text
