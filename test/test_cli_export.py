"""``dli-perception export MODEL_DIR``: precision variants added in place, with one-line errors.

Real CLI in this process, real onnxruntime quantization, on the small nearest-colour model
directory of test/fixtures_models.py and a real image folder.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_models import build_colour_model_dir

from dli_perception import cli
from dli_perception.commands.export import parse_variants
from dli_perception.errors import ConfigError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 210)}


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def dataset(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(8):
            img = np.clip(np.asarray(rgb, np.int16) + rng.integers(-20, 21, (32, 40, 3)), 0, 255).astype(np.uint8)
            assert cv2.imwrite(str(tmp_path / "data" / name / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return tmp_path / "data"


def test_export_adds_variants_to_a_model_dir(tmp_path, dataset):
    model = build_colour_model_dir(tmp_path / "m", classes=list(COLOURS), colours=COLOURS)
    rc, stdout, stderr = _main(["export", str(model), "--dataset", str(dataset), "--variants", "int8"])
    assert rc == 0, stderr
    assert "int8_qdq  accepted  model.int8.onnx: 100.0 % top-1 agreement with fp32" in stdout
    variants = json.loads((model / "metadata.json").read_text())["variants"]
    assert set(variants) == {"fp32", "int8_qdq"} and (model / "model.int8.onnx").is_file()
    assert not (model / "model.fp16.onnx").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "X"], "--out is for a checkpoint"),
        (["--variants", "none"], "nothing to do"),
        (["--variants", "int4"], "--variants takes"),
    ],
)
def test_export_errors_print_one_line(tmp_path, args, message):
    model = build_colour_model_dir(tmp_path / "m")
    rc, _, stderr = _main(["export", str(model), *args])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("dli-perception export: error: "), stderr
    assert message in lines[0]


def test_a_plain_directory_needs_out(tmp_path):
    rc, _, stderr = _main(["export", str(tmp_path)])
    assert rc == 1 and "is not a model directory" in stderr


def test_parse_variants():
    assert parse_variants("int8,fp16") == ["int8_qdq", "fp16"] and parse_variants("fp16, int8,fp16") == [
        "fp16",
        "int8_qdq",
    ]
    assert parse_variants("none") == []
    with pytest.raises(ConfigError):
        parse_variants("")
