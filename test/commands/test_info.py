"""``dli-perception info`` lists every inference backend, what it runs on here, and auto's choice."""

from __future__ import annotations

import re

import pytest
from fixtures_models import build_colour_model_dir

from dli_perception import cli
from dli_perception.commands.info import BackendStatus, auto_choice
from dli_perception.core.backends import BACKENDS, create_backend
from dli_perception.core.backends.tensorrt import tensorrt_availability


@pytest.fixture(scope="module")
def info_text():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["info"]) == 0
    return out.getvalue()


def _backend_line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if re.match(rf"  {name}\s+(available|not available): ", line))


def test_every_backend_is_listed_in_autos_order(info_text):
    lines = [_backend_line(info_text, name) for name in BACKENDS]
    positions = [info_text.index(line) for line in lines]
    assert positions == sorted(positions), info_text
    assert "backend:=auto tries them in this order" in info_text


def test_onnxruntime_lists_this_installations_providers(info_text):
    import onnxruntime

    line = _backend_line(info_text, "onnxruntime")
    offered = onnxruntime.get_available_providers()
    assert line.startswith("  onnxruntime  available: providers " + ", ".join(offered)), line
    assert "auto uses" in line and "CPUExecutionProvider" in line.split("auto uses")[1], line


def test_tensorrt_and_torch_report_what_this_machine_has(info_text):
    import torch

    trt = tensorrt_availability()
    line = _backend_line(info_text, "tensorrt")
    assert line.startswith("  tensorrt     available" if trt.available else "  tensorrt     not available"), line
    assert trt.reason in line, line
    line = _backend_line(info_text, "torch")
    assert ("cuda" in line) == torch.cuda.is_available() and "cpu" in line, line


def test_the_auto_choice_is_what_auto_loads(info_text, tmp_path):
    model = build_colour_model_dir(tmp_path / "model")
    _backend, report = create_backend(model, "auto")
    match = re.search(r"^backend auto\s+(\S+)$", info_text, re.MULTILINE)
    assert match and match.group(1) == report.chosen, (info_text, report.summary())


def test_auto_choice_takes_the_first_available_backend():
    statuses = [BackendStatus("tensorrt", False, "no GPU"), BackendStatus("onnxruntime", False, "missing"),
                BackendStatus("torch", True, "device cpu")]  # fmt: skip
    assert auto_choice(statuses) == "torch"
    assert auto_choice(statuses[:2]) is None
