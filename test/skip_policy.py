"""Skip policy: with ``DLI_FAIL_ON_SKIP=1`` (CI sets it) a skip is a failure unless it is about hardware.

A test may skip only because of the hardware the run happens on, never because a package is missing,
the set-up was incomplete or something is "flaky". The allowlist, by what the skip reason names:

* ``GPU``: a CUDA GPU (or NVIDIA driver) is absent, or present for a test of the no-GPU path;
* ``TensorRT``: TensorRT is not installed (it comes with JetPack, not from PyPI), or is installed for a
  test of the path without it;
* ``camera``: camera hardware (a V4L2 device, ``/dev/video*``, a CSI camera) is absent.

Any other skip, including a module skipped as a whole (``pytest.importorskip``, ``allow_module_level``),
is reported as a failed test with its reason, so it shows in pytest's counts and fails the run. At the
end the run prints every skip with its reason and whether it was allowed. Without the variable skips
stay skips (a laptop without the Jazzy venv, for instance). Expected failures (``xfail``) are not skips.
"""

from __future__ import annotations

import os
import re

import pytest

ENV_VAR = "DLI_FAIL_ON_SKIP"

ALLOWED_SKIPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("GPU", re.compile(r"(?<![\w-])(CUDA|GPU|NVIDIA driver)(?![\w-])", re.IGNORECASE)),
    ("TensorRT", re.compile(r"(?<![\w-])TensorRT(?![\w-])", re.IGNORECASE)),
    ("camera", re.compile(r"\bcamera hardware\b|\bV4L2 device\b|/dev/video|\bCSI camera\b", re.IGNORECASE)),
)
"""(category, pattern): a skip is allowed when its reason matches one of the patterns. A package name
such as ``onnxruntime-gpu`` or ``tensorrt-cu12`` does not match: a missing package is never allowed."""

_SKIP_LOG_KEY = pytest.StashKey[list]()


def enabled() -> bool:
    """Whether disallowed skips fail the run (``DLI_FAIL_ON_SKIP`` set to anything but ``""``/``0``)."""
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def allowed_category(reason: str) -> str | None:
    """The allowlist category a skip reason falls under, or ``None`` when the skip is not allowed."""
    for category, pattern in ALLOWED_SKIPS:
        if pattern.search(reason):
            return category
    return None


def skip_reason(longrepr) -> str:
    """The reason text of a skipped report's ``longrepr`` (a ``(path, line, "Skipped: ...")`` tuple)."""
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _log(config) -> list:
    return config.stash.setdefault(_SKIP_LOG_KEY, [])


class DisallowedModuleSkip(pytest.Item):
    """Stands for a module that skipped itself as a whole for a reason outside the allowlist; fails."""

    def __init__(self, *, reason: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self) -> None:
        pytest.fail(
            f"the whole module skipped for a reason outside the skip allowlist ({ENV_VAR}): {self.reason}",
            pytrace=False,
        )

    def reportinfo(self):
        return self.path, None, f"{self.name}: {self.reason}"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if not (enabled() and report.skipped and isinstance(collector, pytest.Module)):
        return report
    reason = skip_reason(report.longrepr)
    category = allowed_category(reason)
    _log(collector.config).append((collector.nodeid, reason, category))
    if category is None:
        item = DisallowedModuleSkip.from_parent(collector, name="<module skipped>", reason=reason)
        report.outcome, report.longrepr, report.result = "passed", None, [item]
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if not (enabled() and report.skipped) or hasattr(report, "wasxfail"):
        return report
    reason = skip_reason(report.longrepr)
    category = allowed_category(reason)
    _log(item.config).append((item.nodeid, reason, category))
    if category is None:
        report.outcome = "failed"
        report.longrepr = f"skipped for a reason outside the skip allowlist ({ENV_VAR}): {reason}"
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not enabled():
        return
    entries = _log(config)
    refused = sum(1 for _, _, category in entries if category is None)
    terminalreporter.section(f"skips ({ENV_VAR}: {len(entries) - refused} allowed, {refused} refused)")
    if not entries:
        terminalreporter.line("no test skipped")
    for nodeid, reason, category in entries:
        verdict = f"allowed ({category})" if category else "REFUSED (counted as failed)"
        terminalreporter.line(f"{verdict}: {nodeid}: {reason}")
