"""Pick and load an inference backend: an explicit one, or ``auto`` = the fastest that works here.

``auto`` tries TensorRT (only when ``tensorrt`` imports and a CUDA GPU is usable),
then ONNX Runtime (GPU execution providers first, CPU after), then PyTorch, and
reports which one it took and why each earlier one was skipped.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from dli_perception.core.backends.base import Backend
from dli_perception.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime", "torch")
"""Backend names in the order ``auto`` tries them."""
CHOICES = ("auto", *BACKENDS)

_INSTALL = {
    "tensorrt": "TensorRT (JetPack on a Jetson, `pip install tensorrt` on a desktop GPU) and a CUDA build of PyTorch",
    "onnxruntime": "`pip install onnxruntime` (or onnxruntime-gpu for CUDA/TensorRT providers)",
    "torch": "`pip install torch torchvision` (NVIDIA's JetPack wheels on a Jetson)",
}


@dataclass
class Attempt:
    """One backend ``auto`` considered: ``loaded`` or skipped with ``reason``."""

    backend: str
    loaded: bool
    reason: str


@dataclass
class SelectionReport:
    """Which backend was loaded (``chosen``, ``device``, ``precision``) and every attempt on the way."""

    requested: str
    chosen: str = ""
    device: str = ""
    precision: str = ""
    variant: str = ""
    variant_reason: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> dict[str, str]:
        """Backend name -> why it was not used."""
        return {a.backend: a.reason for a in self.attempts if not a.loaded}

    def summary(self) -> str:
        """One line for logs and diagnostics."""
        text = (
            f"backend={self.chosen} device={self.device} precision={self.precision} variant={self.variant} "
            f"(requested {self.requested})"
        )
        if self.variant_reason:
            text += f"; {self.variant_reason}"
        for name, reason in self.skipped.items():
            text += f"; skipped {name}: {reason}"
        for note in self.notes:
            text += f"; note: {note}"
        return text


def backend_class(name: str) -> type[Backend]:
    """The class for a backend name; :class:`ConfigError` for an unknown one."""
    if name == "tensorrt":
        from dli_perception.core.backends.tensorrt import TensorRTBackend

        return TensorRTBackend
    if name == "onnxruntime":
        from dli_perception.core.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    if name == "torch":
        from dli_perception.core.backends.torch_backend import TorchBackend

        return TorchBackend
    raise ConfigError(f"unknown backend {name!r}; choose one of {CHOICES}")


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def precheck(name: str, options: dict[str, Any]) -> str | None:
    """Cheap reason why ``name`` cannot run here (library missing, no GPU), or ``None`` if worth trying."""
    if name == "tensorrt":
        if options.get("device") == "cpu":
            return "device='cpu' requested; TensorRT runs on a GPU only"
        from dli_perception.core.backends.tensorrt import tensorrt_availability

        avail = tensorrt_availability()
        return None if avail.available else avail.reason
    module = {"onnxruntime": "onnxruntime", "torch": "torch"}[name]
    if not _module_present(module):
        return f"{module} is not installed; install {_INSTALL[name]}"
    return None


def split_options(backend: str, opts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route options to backends: explicit ones get all (unknown names raise), ``auto`` gives each its own.

    For ``auto`` an option no backend knows raises :class:`ConfigError`.
    """
    names = BACKENDS if backend == "auto" else (backend,)
    known = {name: set(backend_class(name).OPTIONS) for name in names}
    if backend != "auto":
        unknown = sorted(set(opts) - known[backend])
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for the {backend} backend; known: {sorted(known[backend])}")
        return {backend: dict(opts)}
    everything = set().union(*known.values())
    unknown = sorted(set(opts) - everything)
    if unknown:
        raise ConfigError(f"unknown backend option(s) {unknown}; known: {sorted(everything)}")
    return {name: {k: v for k, v in opts.items() if k in known[name]} for name in names}


def create_backend(
    model_dir: str | os.PathLike,
    backend: str = "auto",
    **opts: Any,
) -> tuple[Backend, SelectionReport]:
    """Load ``model_dir`` with ``backend`` (``auto`` = first that works of :data:`BACKENDS`).

    ``opts`` are backend options (``device``, ``precision`` — ``auto`` by default: the fastest
    precision variant of the model directory that passed its checks —, ``intra_op_threads`` …);
    with ``auto`` each backend receives the ones it knows. Raises
    :class:`BackendUnavailableError` (explicit backend cannot run here, naming what to
    install; or nothing works for ``auto``), :class:`ModelError` (the model is
    refused: no other backend would accept it either) or :class:`ConfigError`.
    """
    if backend not in CHOICES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {CHOICES}")
    routed = split_options(backend, opts)
    report = SelectionReport(requested=backend)
    for name, options in routed.items():
        reason = precheck(name, options)
        if reason is None:
            try:
                instance = backend_class(name).load(model_dir, **options)
            except BackendUnavailableError as exc:
                reason = str(exc)
        if reason is not None:
            if backend != "auto":
                raise BackendUnavailableError(
                    f"the {name} backend cannot run here: {reason}. To use it install {_INSTALL[name]}; "
                    "or pass backend='auto'"
                )
            attempt = Attempt(name, False, reason)
            report.attempts.append(attempt)
            log.info("backend auto: skipping %s: %s", name, reason)
            continue
        attempt = Attempt(name, True, instance.describe())
        report.attempts.append(attempt)
        report.chosen, report.device, report.precision = name, instance.device, instance.precision
        report.variant = instance.variant
        report.variant_reason = (
            instance.variant_reason or f"serving {instance.variant} (the {name} backend runs it only)"
        )
        report.notes.extend(getattr(instance, "notes", []))
        log.info("inference %s", report.summary())
        return instance, report
    raise BackendUnavailableError(
        "no inference backend can run here: "
        + "; ".join(f"{a.backend}: {a.reason}" for a in report.attempts)
        + f". Install one of: {'; '.join(_INSTALL.values())}"
    )
