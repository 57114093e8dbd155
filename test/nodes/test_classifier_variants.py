"""classifier_node with precision variants: serves the INT8 Q/DQ variant by default, says which and why on
/diagnostics, and keeps serving (fp32) when a new model's variant is corrupt.

Real node in a private context, the nearest-colour model of test/fixtures_models.py with variants
added by the real exporter code (onnxruntime quantization) from a real image folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from classifier_rig import ClassifierRig
from fixtures_models import build_colour_model_dir, solid
from graphutil import wait_for
from test_classifier_node import DEADLINE, graph  # noqa: F401  (graph is a fixture)

from dli_perception.core.variant_build import add_variants

pytestmark = pytest.mark.graph
CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def variant_model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("variant_models")
    rng = np.random.default_rng(0)
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for name, rgb in colours.items():
        (root / "data" / name).mkdir(parents=True)
        for i in range(6):
            img = np.clip(np.asarray(rgb, np.int16) + rng.integers(-30, 31, (24, 32, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "data" / name / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    model = build_colour_model_dir(root / "model", CLASSES)
    add_variants(model, dataset=root / "data", which=["int8_qdq"])
    return model


def test_default_precision_serves_int8_and_a_corrupt_variant_falls_back_to_fp32(graph, variant_model, tmp_path):  # noqa: F811
    g: ClassifierRig = graph(model_dir=str(variant_model))  # precision: the default (auto)
    g.ready()
    assert g.classify(solid("green"), 1).label == "green"
    assert wait_for(lambda: g.diag("variant") == "int8_qdq", DEADLINE)
    diag = g.health().values
    assert diag["precision"] == "int8" and diag["variant_reason"].startswith("serving int8_qdq (")
    assert "top-1 agreement with fp32" in diag["variant_reason"]

    broken = shutil.copytree(variant_model, tmp_path / "broken")
    (broken / "model.int8.onnx").write_bytes(b"\0" * 64)
    assert g.client.switch_model(str(broken)).ok, g.client.last_error
    assert wait_for(lambda: g.diag("model_dir") == str(broken), DEADLINE)
    assert wait_for(lambda: g.diag("variant") == "fp32", DEADLINE)
    diag = g.health().values
    assert "does not match metadata.json" in diag["variant_reason"] and diag["status"] == "serving"
    assert g.classify(solid("blue"), 2).label == "blue"
