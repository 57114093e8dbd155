"""CI's runner (.ci/run): time limits per part, pytest's counts, and no way for an empty test run to pass.

The runner's functions are sourced into bash and given small stand-in commands; the parts CI really
runs (set-up, lint, the test suites) are not started here.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ci(script: str, tmp_path: Path, **env: str) -> tuple[str, dict[str, str]]:
    """Run ``script`` in bash after sourcing .ci/run; returns the output and the final ``status``/``totals``."""
    body = f"""
source {REPO / ".ci" / "run"}
logs="$(mktemp -d -p {tmp_path})"
{textwrap.dedent(script)}
printf 'summary: %s\\n' "${{summary[@]}}"
echo "status=$status totals=${{totals[*]}}"
"""
    out = subprocess.run(
        ["bash", "-c", body],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    values = dict(field.split("=", 1) for field in last.split(" ", 1))
    return out.stdout, values


def fake_pytest(tmp_path: Path, closing: str, rc: int) -> str:
    path = tmp_path / "fake_pytest"
    path.write_text(f"#!/bin/sh\necho 'test output'\necho '{closing}'\nexit {rc}\n")
    path.chmod(0o755)
    return str(path)


def test_a_passing_run_is_counted(tmp_path):
    cmd = fake_pytest(tmp_path, "======= 7 passed, 2 skipped, 1 xfailed in 3.21s =======", 0)
    out, values = ci(f'tests "suite" 60 {cmd}', tmp_path)
    assert values == {"status": "0", "totals": "7 0 2"}, out
    assert "summary: suite: exit 0," in out and ": 7 passed, 0 failed, 2 skipped" in out, out
    assert "test output" in out  # the part's output is shown as it runs


def test_failures_and_errors_count_as_failed(tmp_path):
    cmd = fake_pytest(tmp_path, "==== 1 failed, 5 passed, 2 errors in 1.00s ====", 1)
    out, values = ci(f'tests "suite" 60 {cmd}', tmp_path)
    assert values == {"status": "1", "totals": "5 3 0"}, out


def test_a_failed_part_says_how_much_disk_was_left(tmp_path):
    """A full disk fails tests as if the code were wrong; the summary line of a failed part shows the room left."""
    cmd = fake_pytest(tmp_path, "==== 1 failed, 5 passed in 1.00s ====", 1)
    out, values = ci(f'tests "suite" 60 {cmd}', tmp_path)
    line = next(line for line in out.splitlines() if line.startswith("summary: suite:"))
    assert re.search(r"disk free: \S+ in \., \S+ in /tmp, \S+ in /dev/shm", line), line
    ok = fake_pytest(tmp_path, "==== 5 passed in 1.00s ====", 0)
    out, values = ci(f'tests "suite" 60 {ok}', tmp_path)
    assert "disk free" not in next(line for line in out.splitlines() if line.startswith("summary: suite:")), out


def test_no_tests_collected_fails(tmp_path):
    cmd = fake_pytest(tmp_path, "==== no tests ran in 0.01s ====", 5)
    out, values = ci(f'tests "suite" 60 {cmd}', tmp_path)
    assert values["status"] == "1", out
    assert "exit 5" in out and "no test passed" in out, out


def test_a_run_without_a_passed_test_fails_even_with_exit_status_0(tmp_path):
    for n, closing in enumerate(("==== 3 skipped in 0.1s ====", "no closing line at all")):
        cmd = fake_pytest(tmp_path, closing, 0)
        out, values = ci(f'tests "suite {n}" 60 {cmd}', tmp_path)
        assert values["status"] == "1" and "no test passed" in out, out


def test_a_part_over_its_limit_is_stopped_with_everything_it_started(tmp_path):
    marker = tmp_path / "child_survived"
    script = f"""
    plain "hangs" 2 bash -c '(sleep 4; touch {marker}) & sleep 300'
    echo "rc=$?"
    """
    t0 = time.monotonic()
    out, values = ci(script, tmp_path, CI_MIN_PART_S="1")
    assert time.monotonic() - t0 < 30, out
    assert "rc=124" in out and "stopped: over its 2 s limit" in out and values["status"] == "1", out
    time.sleep(5)
    assert not marker.exists(), "a process the part started outlived its time limit"


def test_nothing_starts_once_the_whole_budget_is_spent(tmp_path):
    cmd = fake_pytest(tmp_path, "==== 1 passed in 0.1s ====", 0)
    out, values = ci(f'tests "late suite" 60 {cmd}', tmp_path, CI_BUDGET_S="30")
    assert values == {"status": "1", "totals": "0 0 0"}, out
    assert "late suite: not run, CI's time budget (30 s) is spent" in out, out


def test_a_part_gets_at_most_what_is_left_of_the_budget(tmp_path):
    out, values = ci('plain "short" 600 true', tmp_path, CI_BUDGET_S="100", CI_MIN_PART_S="1")
    limit = re.search(r"short \(at most (\d+) s\)", out)
    assert limit and 90 <= int(limit.group(1)) <= 100 and values["status"] == "0", out
