"""Backbone features of a frozen model, computed once so head-mode epochs train the head alone."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

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
    """Backbone features (input of the head, float32 on the CPU) and targets for all ``batches`` (class
    indices as int64; XY and label vectors stay float).

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
    labels = torch.cat(labels_out)
    return torch.cat(feats), labels if labels.is_floating_point() else labels.long()


def epoch_views(seed: int, epoch: int, feature_views: int, n: int) -> np.ndarray:
    """Which cached view (0..feature_views-1) each of the first ``n`` positions of an epoch's order trains on.

    Drawn from ``(seed, epoch)`` alone, so a run split over several processes draws the same views for the
    same positions as a single process does.
    """
    rng = np.random.default_rng([seed, 5, epoch])
    return rng.integers(0, feature_views, size=n)


def feature_train_batches(
    features: dict[str, Any],
    order: Sequence[int],
    batch_size: int,
    device: torch.device,
    views: np.ndarray | None = None,
) -> Iterator[tuple[Any, Any]]:
    """``(features, labels)`` batches of the cached training features in ``order``.

    ``views`` gives the cached view of each position of ``order`` (see :func:`epoch_views`); None uses view 0.
    """
    import torch

    idx = torch.as_tensor(list(order), dtype=torch.long, device=device)
    view = torch.zeros_like(idx) if views is None else torch.as_tensor(views, device=device)
    for start in range(0, len(order), batch_size):
        sl = slice(start, start + batch_size)
        if "train_y_views" in features:  # targets that depend on the view (regression flips)
            yield features["train"][view[sl], idx[sl]], features["train_y_views"][view[sl], idx[sl]]
        else:
            yield features["train"][view[sl], idx[sl]], features["train_y"][idx[sl]]
