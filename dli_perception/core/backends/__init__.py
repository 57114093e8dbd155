"""Inference backends: one :class:`Backend` interface over TensorRT, ONNX Runtime and PyTorch.

Typical use::

    from dli_perception.core.backends import create_backend

    backend, report = create_backend("models/latest", "auto")
    predictions = backend.classify([rgb_frame])   # [Prediction(label, index, score, probs)]

Importing this package is cheap: torch, onnxruntime and tensorrt are imported
only when a backend is loaded.
"""

from dli_perception.core.backends.base import Backend, Prediction, softmax
from dli_perception.core.backends.select import (
    BACKENDS,
    CHOICES,
    Attempt,
    SelectionReport,
    backend_class,
    create_backend,
)

__all__ = [
    "BACKENDS",
    "CHOICES",
    "Attempt",
    "Backend",
    "Prediction",
    "SelectionReport",
    "backend_class",
    "create_backend",
    "softmax",
]
