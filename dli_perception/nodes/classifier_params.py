"""classifier_node's parameters: the one table (:data:`PARAMS`, also the README's) and what is made of them.

:mod:`dli_perception.nodes.classifier_node` re-exports every name; the node reads its parameters
through :func:`~dli_perception.nodes.params.declare` with this table.
"""

from __future__ import annotations

from typing import Any

from dli_perception.core.backend_options import BackendOptions
from dli_perception.core.backends.select import CHOICES as BACKEND_CHOICES
from dli_perception.core.decision import SMOOTHING, DecisionConfig
from dli_perception.nodes import task_outputs
from dli_perception.nodes.params import Param

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "int8")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def _non_empty(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


PARAMS = [
    Param(
        "model_dir",
        "",
        "Model directory (model.onnx, labels.txt, metadata.json); empty: wait for one on "
        "model_updated. Changing it loads the model in the background.",
    ),
    Param(
        "backend",
        "auto",
        "Inference backend; auto tries tensorrt, then onnxruntime, then torch.",
        choices=BACKEND_CHOICES,
    ),
    Param("device", "auto", "Inference device (auto: a GPU when the backend can use one).", choices=DEVICES),
    Param(
        "threads",
        0,
        "CPU threads for inference (onnxruntime intra-op; torch: its thread pool); 0 = the library's default.",
        min=0,
        max=256,
    ),
    Param(
        "precision",
        "auto",
        "Precision variant: auto serves the fastest one the model directory holds that passed its export "
        "check (INT8 Q/DQ on the CPU and TensorRT, else FP16 on TensorRT, else fp32); the one served and why "
        "are logged and on /diagnostics.",
        choices=PRECISIONS,
    ),
    Param(
        "engine_cache_dir",
        "",
        "Directory of cached TensorRT engines; empty: $DLI_PERCEPTION_ENGINE_CACHE or ~/.cache/dli_perception/engines.",
    ),
    Param(
        "calibration_dir",
        "",
        "Dataset folder (one sub-folder per class) for TensorRT's implicit INT8 calibrator (precision int8, "
        "TensorRT < 11, model without an INT8 Q/DQ variant only).",
    ),
    Param("smoothing", "ema", "Temporal smoothing of the probabilities.", choices=SMOOTHING),
    Param(
        "ema_alpha",
        0.5,
        "Weight of the newest frame in the moving average (1 = no smoothing).",
        min=0.0,
        max=1.0,
        check=_positive,
    ),
    Param(
        "threshold",
        0.5,
        "Smoothed probability (0-1) a class needs; below it the label is unknown_label.",
        min=0.0,
        max=1.0,
    ),
    Param(
        "hysteresis",
        0.1,
        "Probability margin (0-1) a new class must win by, and the current one may fall "
        "below threshold by, before the label changes.",
        min=0.0,
        max=1.0,
    ),
    Param("k", 3, "k_of_n smoothing: votes of the last n frames a label needs.", min=1, max=1000),
    Param("n", 5, "k_of_n smoothing: number of frames voting.", min=1, max=1000),
    Param("unknown_label", "unknown", "Label published when no class is confident enough.", check=_non_empty),
    Param(
        "max_rate_hz",
        0.0,
        "Most frames classified per second; 0 = as fast as the backend goes.",
        min=0.0,
        max=1000.0,
    ),
    *task_outputs.PARAMS,
]

MODEL_PARAMS = (
    "model_dir",
    "backend",
    "device",
    "threads",
    "precision",
    "engine_cache_dir",
    "calibration_dir",
)
DECISION_PARAMS = ("smoothing", "ema_alpha", "threshold", "hysteresis", "k", "n", "unknown_label")
COUNTERS = (
    "received", "dropped", "without_model", "classified", "bad", "errors", "loads", "load_failures", "max_pending"
)  # fmt: skip
"""Counters of :class:`~dli_perception.core.live_stats.LiveStats`, also readable as node attributes."""


def decision_config(values: dict[str, Any]) -> DecisionConfig:
    """The :class:`DecisionConfig` of the decision parameters in ``values``; ConfigError if inconsistent."""
    return DecisionConfig(**{name: values[name] for name in DECISION_PARAMS})


def backend_options(values: dict[str, Any]) -> BackendOptions:
    """The :class:`BackendOptions` of the backend parameters in ``values``."""
    return BackendOptions(**{name: values[name] for name in MODEL_PARAMS if name != "model_dir"})
