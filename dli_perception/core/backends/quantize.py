"""Explicit INT8 quantization (Q/DQ) of an ONNX model with ONNX Runtime's static quantizer.

The result is an ordinary ONNX file in which QuantizeLinear/DequantizeLinear pairs carry the
scales: ONNX Runtime runs it with INT8 kernels on the CPU, and TensorRT 8.6, 10.x and 11.x
build INT8 engines from it without an implicit calibrator. Activations are unsigned 8-bit,
weights signed 8-bit with one scale per output channel. Calibration batches come from the
training images through the one preprocessing (see :mod:`dli_perception.core.variant_build`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dli_perception.errors import BackendUnavailableError, ModelError

log = logging.getLogger(__name__)

QUANT_SETTINGS = {
    "format": "QDQ",
    "activations": "QUInt8",
    "weights": "QInt8",
    "per_channel": True,
    "calibration": "MinMax",
}
"""How the INT8 variant is quantised (recorded in metadata.json beside the variant)."""


def quantize_qdq(
    onnx_path: Path,
    batches: Sequence[np.ndarray],
    out_path: Path,
    input_name: str = "input",
    per_channel: bool = True,
) -> Path:
    """Quantise ``onnx_path`` to ``out_path`` (written atomically) with Q/DQ nodes, calibrated on ``batches``.

    ``batches`` are float32 ``(N, 3, S, S)`` arrays made by the shared preprocessing. Raises
    :class:`ModelError` (no batches, quantizer failed) or :class:`BackendUnavailableError`
    (onnxruntime's quantization tools missing).
    """
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise BackendUnavailableError(
            f"INT8 quantization needs onnxruntime with its quantization tools and onnx (pip install onnx): {exc}"
        ) from exc
    batches = [b for b in batches if b.shape[0] > 0]
    if not batches:
        raise ModelError("no calibration images; INT8 quantization needs at least one")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter({input_name: b} for b in batches)

        def get_next(self):
            return next(self._it, None)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out_path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        staged = Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(onnx_path), str(pre))
            quantize_static(
                str(pre),
                str(staged),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:  # onnxruntime raises many types here; the model is what failed
            raise ModelError(f"INT8 quantization of {onnx_path} failed: {type(exc).__name__}: {exc}") from exc
        os.replace(staged, out_path)
    images = sum(b.shape[0] for b in batches)
    log.info("quantised %s to INT8 Q/DQ (%d calibration images) -> %s", onnx_path, images, out_path)
    return out_path
