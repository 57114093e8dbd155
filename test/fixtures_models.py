"""Small real model directories for tests that need a model but not training (node and CLI tests).

:func:`build_colour_model_dir` writes a genuine model directory (``model.onnx``, ``labels.txt``,
``metadata.json``) whose ONNX graph is a nearest-mean-colour classifier: it averages the
preprocessed frame over its pixels and scores each class by minus the squared distance to the
class's colour (as a linear layer: ``2 s m.c_k - s |c_k|^2``). Built with onnx.helper, so it
needs no torch and loads and runs in milliseconds, which keeps graph tests fast; every backend
path (metadata checks, ONNX hash, onnxruntime session, softmax) is the real one.

:func:`build_xy_model_dir` and :func:`build_multilabel_model_dir` do the same for the other two
tasks, with outputs that are known functions of the frame (see each), so a test can say what the
served result must be.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dli_perception.core.fsutil import sha256_file
from dli_perception.core.modeldir import (
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    ModelMetadata,
    write_metadata_files,
)
from dli_perception.core.preprocess import PreprocessConfig, normalize

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "yellow": (255, 255, 0),
}


def solid(colour: Sequence[int] | str, height: int = 24, width: int = 32) -> np.ndarray:
    """An ``height x width`` RGB uint8 frame of one colour (an RGB triple or a name of :data:`COLOURS`)."""
    rgb = COLOURS[colour] if isinstance(colour, str) else tuple(colour)
    return np.broadcast_to(np.asarray(rgb, np.uint8), (height, width, 3)).copy()


def normalised_mean(rgb: Sequence[int], cfg: PreprocessConfig) -> np.ndarray:
    """The model-space (mean/std normalised) value of a solid colour, shape (3,)."""
    return normalize(solid(rgb, 1, 1), cfg)[:, 0, 0].astype(np.float64)


def build_colour_model_dir(
    dest: Path,
    classes: Sequence[str] = ("red", "green", "blue"),
    colours: Mapping[str, Sequence[int]] | None = None,
    size: int = 32,
    sharpness: float = 1.0,
) -> Path:
    """Write a model directory at ``dest`` classifying frames by their nearest class colour.

    ``colours`` maps each class to an RGB triple (default: :data:`COLOURS` by class name).
    """
    from onnx import TensorProto, helper, numpy_helper

    colours = dict(colours or {c: COLOURS[c] for c in classes})
    cfg = PreprocessConfig(size=size)
    centres = np.stack([normalised_mean(colours[c], cfg) for c in classes])  # (C, 3)
    weight = (2.0 * sharpness * centres.T).astype(np.float32)  # (3, C)
    bias = (-sharpness * (centres**2).sum(axis=1)).astype(np.float32)  # (C,)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [INPUT_NAME, "axes"], ["pooled"], keepdims=0),
            helper.make_node("Gemm", ["pooled", "weight", "bias"], [OUTPUT_NAME]),
        ],
        "nearest_colour",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(classes)])],
        initializer=[
            numpy_helper.from_array(np.asarray([2, 3], np.int64), "axes"),
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    meta = ModelMetadata(classes=list(classes), preprocess=cfg, backbone="nearest-colour (test fixture)")
    return _save_graph(dest, graph, meta)


def _save_graph(dest: Path, graph, meta: ModelMetadata) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="dli_perception tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    dest.mkdir(parents=True)
    onnx.save(model, str(dest / ONNX_FILE))
    meta.onnx_sha256 = sha256_file(dest / ONNX_FILE)
    write_metadata_files(dest, meta)
    return dest


XY_SCALE = 0.4
"""Gain of :func:`build_xy_model_dir`'s outputs."""


def build_xy_model_dir(dest: Path, size: int = 32, offset: tuple[float, float] = (0.1, -0.2)) -> Path:
    """A regression model directory (task ``regression``, outputs ``x, y``) that needs no training.

    ``x = XY_SCALE * mean(left half of the preprocessed frame) + offset[0]`` and
    ``y = XY_SCALE * mean(right half) + offset[1]``, means over all three normalised channels
    (:func:`expected_xy` computes it for frames whose halves are solid colours).
    """
    from onnx import TensorProto, helper, numpy_helper

    half = size // 2
    weight = np.zeros((size, 2), np.float32)
    weight[:half, 0] = XY_SCALE / half
    weight[half:, 1] = XY_SCALE / (size - half)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [INPUT_NAME, "axes"], ["columns"], keepdims=0),  # (N, S) column means
            helper.make_node("Gemm", ["columns", "weight", "bias"], [OUTPUT_NAME]),
        ],
        "half_means",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            numpy_helper.from_array(np.asarray([1, 2], np.int64), "axes"),
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.asarray(offset, np.float32), "bias"),
        ],
    )
    meta = ModelMetadata(
        classes=["x", "y"], preprocess=PreprocessConfig(size=size), backbone="half-means (test fixture)",
        task="regression",
    )  # fmt: skip
    return _save_graph(dest, graph, meta)


def halves(left: Sequence[int], right: Sequence[int], height: int = 64, width: int = 64) -> np.ndarray:
    """An RGB uint8 frame whose left half is colour ``left`` and right half ``right`` (width even)."""
    frame = solid(left, height, width)
    frame[:, width // 2 :] = np.asarray(right, np.uint8)
    return frame


def expected_xy(left: Sequence[int], right: Sequence[int], size: int = 32, offset=(0.1, -0.2)) -> tuple[float, float]:
    """What :func:`build_xy_model_dir`'s model gives for a :func:`halves` frame (width a multiple of 2 * size / 2)."""
    cfg = PreprocessConfig(size=size)
    return (
        XY_SCALE * float(normalised_mean(left, cfg).mean()) + offset[0],
        XY_SCALE * float(normalised_mean(right, cfg).mean()) + offset[1],
    )


ML_GAIN = 4.0
"""Gain of :func:`build_multilabel_model_dir`'s logits per unit of normalised channel value."""


def build_multilabel_model_dir(
    dest: Path,
    labels: Sequence[str] = ("red", "green", "blue"),
    thresholds: Mapping[str, float] | None = None,
    size: int = 32,
) -> Path:
    """A multi-label model directory whose label ``k`` is channel ``k`` of the frame (R, G, B).

    logit_k = ML_GAIN * (mean normalised channel k - normalised 128): a channel brighter than mid
    grey scores over 0.5. ``thresholds`` go into metadata.json (the model's own).
    """
    from onnx import TensorProto, helper, numpy_helper

    assert len(labels) == 3, "one label per colour channel"
    cfg = PreprocessConfig(size=size)
    mid = normalised_mean((128, 128, 128), cfg)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [INPUT_NAME, "axes"], ["pooled"], keepdims=0),  # (N, 3)
            helper.make_node("Gemm", ["pooled", "weight", "bias"], [OUTPUT_NAME]),
        ],
        "channel_labels",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(np.asarray([2, 3], np.int64), "axes"),
            numpy_helper.from_array((ML_GAIN * np.eye(3)).astype(np.float32), "weight"),
            numpy_helper.from_array((-ML_GAIN * mid).astype(np.float32), "bias"),
        ],
    )
    meta = ModelMetadata(
        classes=list(labels), preprocess=cfg, backbone="channel-labels (test fixture)", task="multilabel",
        thresholds=dict(thresholds or {}),
    )  # fmt: skip
    return _save_graph(dest, graph, meta)


def expected_label_scores(rgb: Sequence[int], labels: Sequence[str] = ("red", "green", "blue"), size: int = 32):
    """The sigmoid scores :func:`build_multilabel_model_dir`'s model gives for a solid frame of ``rgb``."""
    cfg = PreprocessConfig(size=size)
    logits = ML_GAIN * (normalised_mean(rgb, cfg) - normalised_mean((128, 128, 128), cfg))
    return {label: float(1.0 / (1.0 + np.exp(-v))) for label, v in zip(labels, logits, strict=True)}


def corrupt_copy(src: Path, dest: Path) -> Path:
    """A copy of model directory ``src`` whose ``model.onnx`` bytes are garbage (refused on load)."""
    shutil.copytree(src, dest)
    (dest / ONNX_FILE).write_bytes(b"this is not an onnx model")
    return dest
