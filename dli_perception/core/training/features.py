"""Backbone features of a frozen model, computed once so head-mode epochs train the head alone."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dli_perception.core.training.backbones import _headless, backbone_spec
from dli_perception.core.training.steps import BatchCallback, _autocast, _check_cancel

if TYPE_CHECKING:
    import torch


def extract_features(
    model: torch.nn.Module,
    backbone: str,
    batches: Iterable[tuple[Any, Any]],
    *,
    device: torch.device,
    amp: bool = False,
    cancel: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (input of the head, float32 on the CPU) and labels for all ``batches``.

    Runs in eval mode without gradients; the training mode is restored afterwards.
    """
    import torch

    feats: list[torch.Tensor] = []
    labels_out: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _headless(model, backbone):
            for i, (inputs, labels) in enumerate(batches, start=1):
                _check_cancel(cancel, "feature extraction")
                inputs = torch.as_tensor(inputs).to(device, non_blocking=True)
                with _autocast(device, amp):
                    out = model(inputs)
                feats.append(out.float().cpu())
                labels_out.append(torch.as_tensor(labels).cpu())
                if on_batch is not None:
                    on_batch(i, 0.0, 0.0, int(inputs.shape[0]))
    finally:
        model.train(was_training)
    if not feats:
        return torch.zeros((0, backbone_spec(backbone).feature_dim)), torch.zeros((0,), dtype=torch.int64)
    return torch.cat(feats), torch.cat(labels_out).long()
