"""How to load a model for inference: backend, device, precision, threads, caches.

:class:`BackendOptions` is what the classifier node's parameters and ``dli-perception classify``'s
flags both turn into; :meth:`BackendOptions.load` is the one place a model directory becomes a
running backend for them (``create_backend`` plus the torch thread pool).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendOptions:
    """Backend settings; empty strings and ``threads`` 0 leave the choice to the backend.

    ``engine_cache_dir`` serves as TensorRT's engine cache and the TensorRT execution provider's
    cache; ``calibration_dir`` is the dataset folder whose images calibrate TensorRT's implicit INT8
    (where the installed TensorRT still has calibrators; the model dir's INT8 Q/DQ variant needs none).
    """

    backend: str = "auto"
    device: str = "auto"
    threads: int = 0
    precision: str = ""
    engine_cache_dir: str = ""
    calibration_dir: str = ""

    def kwargs(self) -> dict[str, Any]:
        """Options for :func:`create_backend`, each kept only if one of the candidate backends knows it."""
        from dli_perception.core.backends.select import BACKENDS, backend_class

        wanted: dict[str, Any] = {"device": self.device}
        if self.precision:
            wanted["precision"] = self.precision
        if self.threads > 0:
            wanted["intra_op_threads"] = int(self.threads)
        if self.engine_cache_dir:
            cache = self.engine_cache_dir
            wanted.update(cache_dir=cache, trt_cache_dir=cache)
        if self.calibration_dir:
            wanted["calibration_dir"] = self.calibration_dir
        names = BACKENDS if self.backend == "auto" else (self.backend,)
        known = set().union(*(backend_class(name).OPTIONS for name in names))
        return {k: v for k, v in wanted.items() if k in known}

    def load(self, model_dir: str | os.PathLike) -> tuple[Any, Any]:
        """``(backend, selection report)`` serving ``model_dir``; the backends' errors propagate."""
        from dli_perception.core.backends.select import create_backend

        backend, selection = create_backend(model_dir, self.backend, **self.kwargs())
        if selection.chosen == "torch" and self.threads > 0:
            import torch

            torch.set_num_threads(self.threads)
        return backend, selection
