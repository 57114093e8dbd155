"""The checks an exported ``model.onnx`` must pass before :mod:`dli_perception.core.export` writes a model directory.

:func:`check_onnx`: ``onnx.checker`` with shape inference, the opset asked for, the input and output names
and a dynamic batch axis; :func:`compare_with_torch`: ONNX Runtime agrees with torch on seeded random
batches. Both raise :class:`~dli_perception.errors.ModelError` saying what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dli_perception.core.modeldir import INPUT_NAME, OUTPUT_NAME
from dli_perception.errors import ModelError

if TYPE_CHECKING:
    import torch

DEFAULT_OPSET = 18  # the ONNX opset export writes unless told otherwise
MIN_OPSET = 17  # the oldest it accepts


def check_onnx(path: Path, opset: int, num_classes: int) -> None:
    """``onnx.checker`` (with shape inference), exported opset, names and a dynamic batch axis."""
    import onnx

    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError and shape-inference errors
        raise ModelError(f"exported ONNX fails onnx.checker: {exc}") from exc
    got = {o.domain or "ai.onnx": o.version for o in proto.opset_import}.get("ai.onnx")
    if got != opset:
        raise ModelError(
            f"the exporter produced opset {got} instead of the requested {opset} (its version conversion "
            f"failed); export with opset={DEFAULT_OPSET}"
        )
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in proto.graph.output] != [OUTPUT_NAME]:
        raise ModelError(
            f"exported ONNX has inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in proto.graph.output]}, expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]"
        )
    batch = inputs[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise ModelError(f"exported ONNX input has a fixed batch size {batch.dim_value}; expected a dynamic one")
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(out_dims) != 2 or (out_dims[1].dim_value and out_dims[1].dim_value != num_classes):
        raise ModelError(f"exported ONNX output shape does not match {num_classes} classes")


def compare_with_torch(model: torch.nn.Module, path: Path, size: int, atol: float, rtol: float) -> float:
    """Run ONNX Runtime and torch on seeded random batches of 2 and 1; ModelError if they differ."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in (2, 1):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
        if got.shape != expected.shape:
            raise ModelError(f"ONNX Runtime returned shape {got.shape}, torch {expected.shape}")
        diff = float(np.max(np.abs(got - expected)))
        worst = max(worst, diff)
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise ModelError(
                f"ONNX Runtime output differs from torch by up to {diff:.3g} (atol {atol}, rtol {rtol}) on a "
                f"batch of {batch}; the model directory was not written"
            )
    return worst
