"""A Ctrl-C that arrives while a node process is still starting ends it cleanly too."""

from __future__ import annotations

import signal
import time

import pytest

from dli_perception.nodes.launcher import NODE_MODULES

pytestmark = pytest.mark.graph


@pytest.mark.parametrize("name", NODE_MODULES)
@pytest.mark.parametrize("delay_s", [0.3, 1.0])
def test_signal_during_start_up_exits_0_without_traceback(node_process, name, delay_s):
    proc = node_process(name)
    time.sleep(delay_s)
    proc.send(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, proc.output()
    assert "Traceback" not in proc.stderr(), proc.stderr()
