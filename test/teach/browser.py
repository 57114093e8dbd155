"""Helpers for the teach station's browser tests: the station as a real process, headless Chromium.

Chromium comes from Debian (``scripts/install_browser.sh``); Playwright drives it through
``executable_path`` (its own browser download cannot work offline). A missing browser fails the
test with the command to run: CI must not skip the browser tests.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from procutil import kill_group

CHROMIUM = os.environ.get("DLI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
START_TIMEOUT_S = 120.0


def chromium_path() -> str:
    """Debian's Chromium, or a failed test saying how to install it."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"{CHROMIUM} not found: run scripts/install_browser.sh (as root) to install Debian's chromium")
    return CHROMIUM


def artifact_dir(fallback: Path) -> Path:
    """Where screenshots go: $DLI_TEST_ARTIFACTS, else ``fallback`` (a pytest tmp dir)."""
    path = Path(os.environ.get("DLI_TEST_ARTIFACTS") or fallback)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Station:
    """``dli-perception teach`` as its own process; :attr:`url` once it serves."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dli_teach_"))
        self.log = self.dir / "teach.log"
        cmd = [str(Path(sys.prefix) / "bin" / "dli-perception"), "teach", "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        self.url = self._wait_for_url()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            match = re.search(r"Open the teach station: (\S+)", self.output())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"dli-perception teach exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"no URL printed within {START_TIMEOUT_S:g} s:\n{self.output()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT as a terminal's Ctrl-C; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        kill_group(self.proc)

    def assert_clean_exit(self, rc: int) -> None:
        """The station exited 0 (``rc`` from :meth:`stop`) and printed no traceback."""
        out = self.output()
        assert rc == 0, out
        assert "Traceback" not in out, out


SCENE_JS = """() => {
  // The synthetic camera's class, from the pixels on the page: free is drawn on green, blocked on magenta.
  const c = document.getElementById('view');
  if (!window.teachStats || !window.teachStats.drawn) return null;
  const small = window.__sceneCanvas || (window.__sceneCanvas = document.createElement('canvas'));
  small.width = 32; small.height = 24;
  const sg = small.getContext('2d', { willReadFrequently: true });
  sg.drawImage(c, 0, 0, 32, 24);
  const d = sg.getImageData(0, 0, 32, 24).data;
  let r = 0, g = 0, b = 0;
  for (let i = 0; i < d.length; i += 4) { r += d[i]; g += d[i + 1]; b += d[i + 2]; }
  return g > (r + b) / 2 ? 'free' : 'blocked';
}"""


def scene(page) -> str | None:
    """The class the page's live view shows now (None before the first frame)."""
    return page.evaluate(SCENE_JS)


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
