"""Precision variants of a model directory, and which one a backend serves.

Export writes up to three ONNX files of the same network (see :mod:`.variant_build`):

- ``fp32`` — ``model.onnx``, always present;
- ``int8_qdq`` — ``model.int8.onnx``, explicit INT8 quantization (Q/DQ), calibrated on the training
  images and written only when it agrees with fp32 on the validation split: top-1 agreement (classification)
  or active-label-set agreement (multilabel) of at least :data:`AGREEMENT_THRESHOLD`, or a mean output
  difference of at most :data:`XY_DELTA_BOUND` (regression);
- ``fp16`` — ``model.fp16.onnx``, float16 weights and activations with float32 input and output,
  for strongly typed TensorRT (11.x has no FP16 builder flag).

``metadata.json`` lists them under ``variants`` with file, sha256, status (:data:`ACCEPTED`,
:data:`REFUSED`, :data:`FAILED`, :data:`SKIPPED`), reason and check figures. A backend asks
:func:`resolve` for the variants it could serve, best first; each comes with a sentence saying
why it was taken or passed over, which ends up in the node's log and on ``/diagnostics``.
Everything here is plain Python: no onnxruntime, torch or tensorrt import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.core.fsutil import sha256_file
from dli_perception.core.modeldir import ONNX_FILE, ModelMetadata
from dli_perception.errors import ConfigError

FP32 = "fp32"
INT8_QDQ = "int8_qdq"
FP16 = "fp16"
VARIANTS = (FP32, INT8_QDQ, FP16)
VARIANT_FILES = {FP32: ONNX_FILE, INT8_QDQ: "model.int8.onnx", FP16: "model.fp16.onnx"}
BUILT_VARIANTS = (INT8_QDQ, FP16)
"""The variants export derives from the fp32 model."""

AGREEMENT_THRESHOLD = 0.98
"""Least agreement with fp32 on the validation split for a reduced-precision variant to be written: the share
of images with the same top-1 class (classification) or the same active label set at the model's thresholds
(multilabel)."""

XY_DELTA_BOUND = 0.05
"""Regression: the largest mean |output - fp32 output| (normalised units, 2.5 % of the image half-width) a
reduced-precision variant may show on the validation split; above it the variant is refused."""

ACCEPTED, REFUSED, FAILED, SKIPPED = "accepted", "refused", "failed", "skipped"

PRECISION_CHOICES = ("auto", "fp32", "fp16", "int8")
"""What a user asks for; ``auto`` lets the backend take the fastest variant that passed its checks."""

ADD_HINT = "add them with `dli-perception export MODEL_DIR` (calibrates on the training images)"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISION_CHOICES`; :class:`ConfigError` otherwise."""
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class Candidate:
    """A variant a backend may serve: its ONNX ``path`` and ``reason`` (why it is a good choice)."""

    variant: str
    path: Path
    reason: str


@dataclass
class Resolution:
    """The usable variants, best first, and why the others were passed over (``skipped``)."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    """Variant name -> why it cannot be served."""


def describe_entry(name: str, info: dict[str, Any]) -> str:
    """Short account of a variant's check, e.g. ``99.2 % top-1 agreement with fp32 on 120 validation images``."""
    agreement, images = info.get("agreement"), info.get("val_images")
    where = "validation images" if info.get("check_data") != "random" else "random inputs"
    delta = info.get("mean_abs_delta")
    if isinstance(delta, (int, float)) and images:
        return f"mean |XY - fp32 XY| {delta:.4f} (max {info.get('max_abs_delta', 0.0):.4f}) on {images} {where}"
    if isinstance(agreement, (int, float)) and images:
        kind = "active-label-set" if info.get("task") == "multilabel" else "top-1"
        return f"{100 * agreement:.1f} % {kind} agreement with fp32 on {images} {where}"
    return f"{name} variant"


def variant_path(model_dir: str | os.PathLike, meta: ModelMetadata, name: str) -> tuple[Path | None, str]:
    """The intact file of an accepted variant, or ``(None, why not)``; fp32 is checked by the backend itself.

    A variant is unusable when metadata.json does not list it (older directories list none),
    lists it as refused/failed/skipped, or its file is missing or differs from the recorded sha256.
    """
    model_dir = Path(model_dir)
    if name == FP32:
        return model_dir / ONNX_FILE, "the fp32 model"
    if name not in VARIANTS:
        raise ConfigError(f"unknown precision variant {name!r}; known: {VARIANTS}")
    if not meta.variants:
        return None, f"{model_dir} has no precision variants (exported before they existed); {ADD_HINT}"
    info = meta.variants.get(name)
    if info is None:
        return None, f"metadata.json lists no {name} variant; {ADD_HINT}"
    status = info.get("status")
    if status != ACCEPTED:
        return None, f"the {name} variant was {status} at export: {info.get('reason', 'no reason recorded')}"
    file = str(info.get("file", ""))
    if not file or Path(file).name != file or file.startswith("."):
        return None, f"metadata.json names an invalid file {file!r} for the {name} variant; re-export the model"
    path = model_dir / file
    if not path.is_file():
        return None, f"{path} is missing although metadata.json lists it; {ADD_HINT}"
    recorded = info.get("sha256", "")
    actual = sha256_file(path)
    if not recorded or actual != recorded:
        return None, (
            f"{path} does not match metadata.json (sha256 {actual[:12]}… vs recorded {str(recorded)[:12]}…): "
            f"corrupt or replaced; {ADD_HINT}"
        )
    return path, describe_entry(name, info)


def resolve(model_dir: str | os.PathLike, meta: ModelMetadata, wanted: Sequence[str]) -> Resolution:
    """The variants of ``wanted`` (best first) that can be served from ``model_dir``, and why others cannot."""
    out = Resolution()
    for name in wanted:
        path, reason = variant_path(model_dir, meta, name)
        if path is None:
            out.skipped.append(f"{name}: {reason}")
            out.missing[name] = reason
        else:
            out.candidates.append(Candidate(name, path, reason))
    return out


def serving_reason(requested: str, chosen: Candidate, skipped: Sequence[str]) -> str:
    """One sentence for logs and diagnostics: which variant serves, for which request, and what was passed over."""
    text = f"serving {chosen.variant} ({chosen.reason}) for precision={requested}"
    if skipped:
        text += "; passed over " + "; ".join(skipped)
    return text
