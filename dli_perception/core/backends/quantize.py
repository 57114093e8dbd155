"""INT8 quantisation of ``model.onnx`` for ONNX Runtime on CPUs (static, QDQ, per-channel weights).

Calibration images come from a dataset through the shared preprocessing
(:mod:`dli_perception.core.backends.calibration`). The quantised model is cached
outside the model directory (which may be read-only) under a name made of the
ONNX hash, the calibration images' hash and the onnxruntime version, so it is
built once and rebuilt exactly when one of them changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dli_perception.core.backends.calibration import calibration_batches, calibration_fingerprint
from dli_perception.core.fsutil import sha256_file
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.errors import BackendUnavailableError, ModelError

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"


def int8_cache_path(cache_dir: str | os.PathLike, onnx_path: Path, calibration: Sequence[Path], ort_version: str) -> Path:
    """Where the INT8 model for these inputs lives in ``cache_dir``."""
    h = hashlib.sha256()
    for part in (sha256_file(onnx_path), calibration_fingerprint(calibration), ort_version, "qdq-u8s8-perchannel-v1"):
        h.update(part.encode() + b"\n")
    return Path(cache_dir) / f"{h.hexdigest()[:32]}{INT8_SUFFIX}"


def quantize_int8(
    onnx_path: Path,
    calibration: Sequence[Path],
    cfg: PreprocessConfig,
    out_path: Path,
    input_name: str = "input",
    batch_size: int = 8,
) -> Path:
    """Quantise ``onnx_path`` to ``out_path`` (atomically), calibrated on ``calibration`` images."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise BackendUnavailableError(f"INT8 needs onnxruntime's quantization tools (pip install onnx): {exc}") from exc

    batches = list(calibration_batches(calibration, cfg, min(batch_size, len(calibration))))
    if not batches:
        raise ModelError("no readable calibration images; INT8 quantisation needs at least one")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter({input_name: b} for b in batches)

        def get_next(self):
            return next(self._it, None)

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
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:  # onnxruntime raises many types here; the model is what failed
            raise ModelError(f"INT8 quantisation of {onnx_path} failed: {exc}") from exc
        os.replace(staged, out_path)
    log.info("quantised %s to INT8 (%d calibration images) -> %s", onnx_path, len(calibration), out_path)
    return out_path
