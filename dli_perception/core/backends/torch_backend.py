"""PyTorch backend: rebuilds the architecture and loads ``checkpoint.pt`` (weights only, never pickled code).

Runs in ``eval`` mode under ``torch.inference_mode`` with channels-last memory
format, on CUDA when available (``device="auto"``) or where told.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core.backends.base import Backend, check_options
from dli_perception.core.modeldir import CHECKPOINT_FILE, read_model_checkpoint
from dli_perception.errors import BackendUnavailableError, ConfigError, DliPerceptionError, ModelError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
INSTALL_HINT = "install PyTorch and torchvision (`pip install torch torchvision`; on a Jetson, NVIDIA's JetPack wheels)"


def import_torch():
    """Import ``torch`` and ``torchvision`` or raise :class:`BackendUnavailableError`."""
    try:
        import torch
        import torchvision  # noqa: F401  (needed to rebuild the architecture)
    except ImportError as exc:
        raise BackendUnavailableError(f"the torch backend needs PyTorch: {INSTALL_HINT}") from exc
    return torch


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _build_arch(backbone: str, num_classes: int):
    """An untrained ``backbone`` network with a ``num_classes`` head; :class:`ModelError` if unknown.

    Uses the one backbone registry, :func:`dli_perception.core.training.build_model`.
    """
    from dli_perception.core.training import build_model

    try:
        model, _info = build_model(backbone, num_classes=num_classes, weights="none")
    except (DliPerceptionError, ValueError) as exc:
        raise ModelError(
            f"metadata.json names backbone {backbone!r} with {num_classes} classes, which the torch backend "
            f"cannot rebuild ({exc}); use the onnxruntime backend or re-train"
        ) from exc
    return model


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is usable, else ``cpu``; ``cuda`` without one raises."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ConfigError(f"torch device must be one of {DEVICES} or 'cuda:N', got {device!r}")
    torch = import_torch()
    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device.startswith("cuda") and not has_cuda:
        raise BackendUnavailableError(
            f"device={device!r} asked for, but PyTorch sees no CUDA GPU here (CPU-only build or no driver); "
            "use device='cpu' or install a CUDA build of PyTorch"
        )
    return device


class TorchBackend(Backend):
    """The trained network in eager PyTorch. Options: ``device`` ("auto"|"cpu"|"cuda"|"cuda:N"),
    ``channels_last`` (default True)."""

    name = "torch"
    OPTIONS = ("device", "channels_last")

    def __init__(self, model_dir, metadata, model, device: str, channels_last: bool) -> None:
        super().__init__(model_dir, metadata)
        self._model = model
        self.device = device
        self.precision = "fp32"
        self._channels_last = channels_last

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        *,
        device: str = "auto",
        channels_last: bool = True,
        **unknown: Any,
    ) -> TorchBackend:
        """Rebuild the network and load ``checkpoint.pt``; raises ModelError or BackendUnavailableError."""
        check_options(cls.name, unknown, cls.OPTIONS)
        torch = import_torch()
        dev = resolve_device(device)
        meta = cls.read_metadata(model_dir, require_onnx=False)
        model = _build_arch(meta.backbone, meta.num_classes)
        ckpt_path = Path(model_dir) / CHECKPOINT_FILE
        state = read_model_checkpoint(model_dir, meta)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(
                f"{ckpt_path} does not fit a {meta.backbone} with {meta.num_classes} classes: {_short(exc, 300)}"
            ) from exc
        model.eval().to(dev)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        backend = cls(model_dir, meta, model, dev, channels_last)
        # One forward pass proves the input size and class count agree with the metadata.
        probe = np.zeros((1, *meta.preprocess.input_shape), dtype=np.float32)
        try:
            out = backend._logits(probe)
        except RuntimeError as exc:
            raise ModelError(f"{meta.backbone} rejects input {probe.shape} from metadata.json: {_short(exc)}") from exc
        if out.shape != (1, meta.num_classes):
            raise ModelError(
                f"{ckpt_path}: network outputs {out.shape[1:]} classes, metadata.json lists {meta.num_classes}"
            )
        log.info("loaded %s with %s", ckpt_path, backend.describe())
        return backend

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch)
        if self.device != "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self._model(x)
        return y.float().cpu().numpy()

    def _release(self) -> None:
        self._model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
