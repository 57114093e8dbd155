"""One pass of training and one of validation over batches: plain functions the run calls each epoch."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.training.results import EvalResult
from dli_perception.errors import TrainingCancelledError, TrainingError

if TYPE_CHECKING:
    import torch

    from dli_perception.core.training.targets import TaskHead

FINETUNE_MICRO_BATCH = 8
"""Fine-tuning runs forward/backward over parts of at most this many images (one optimiser step per
batch): ResNet-18's activations for 16 images at 224 px put a CPU run over the 1.5 GB a 4 GB Jetson
can give training."""


def _check_cancel(cancel: threading.Event | None, where: str) -> None:
    if cancel is not None and cancel.is_set():
        raise TrainingCancelledError(f"training cancelled during {where}")


def _autocast(device: torch.device, amp: bool):
    import torch

    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


BatchCallback = Callable[[int, float, float, int], None]
"""``on_batch(batch, running_loss, running_accuracy, batch_size)`` after each batch (batch from 1)."""


def train_one_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[Any, Any]],
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    scaler: Any = None,
    amp: bool = False,
    cancel: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
    micro_batch: int = 0,
    score: Callable[[Any, Any], float] | None = None,
) -> tuple[float, float]:
    """One pass over ``batches`` of (inputs, targets); returns (mean loss, mean of ``score``).

    ``score(outputs, targets)`` sums a per-image figure over a batch (default: correct top-1, so the
    second value is the accuracy 0-1; see :meth:`.targets.TaskHead.batch_score` for the other tasks).

    The model is used in the mode the caller set (``train()`` to fine-tune, ``eval()`` for a
    frozen backbone's batch norm). ``micro_batch`` > 0 runs forward and backward over parts of at
    most that many images and steps once per batch with their summed gradients (the batch's loss,
    class weights included; batch norm sees each part): activation memory of one part, not the
    batch. Raises :class:`TrainingCancelledError` when ``cancel`` is set before a batch; the
    parameters then hold the last completed step.
    """
    import torch

    total_loss, correct, seen = 0.0, 0, 0
    for i, (inputs, labels) in enumerate(batches, start=1):
        _check_cancel(cancel, "training")
        inputs = torch.as_tensor(inputs).to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        parts = _parts(int(labels.shape[0]), micro_batch)
        weight = getattr(criterion, "weight", None) if labels.dtype == torch.int64 else None
        whole = weight[labels].sum() if weight is not None else float(labels.shape[0])
        loss_sum, all_logits = None, []
        for part in parts:
            with _autocast(device, amp):
                logits = model(inputs[part])
                loss = criterion(logits.float(), labels[part])
            if len(parts) > 1:  # this part's share of the batch's (weighted) mean loss
                loss = loss * ((weight[labels[part]].sum() if weight is not None else logits.shape[0]) / whole)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"training loss became {loss.item()} at batch {i}; lower lr (now "
                    f"{optimizer.param_groups[-1]['lr']:.3g}) or check the images"
                )
            (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            all_logits.append(logits.detach())
        loss = loss_sum
        logits = all_logits[0] if len(all_logits) == 1 else torch.cat(all_logits)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        n = int(labels.shape[0])
        total_loss += float(loss.detach()) * n
        if score is None:
            correct += int((logits.detach().argmax(dim=1) == labels).sum())
        else:
            correct += score(logits.detach(), labels)
        seen += n
        if on_batch is not None:
            on_batch(i, total_loss / seen, correct / seen, n)
    if seen == 0:
        raise TrainingError("no training batch was produced; the training split is empty")
    return total_loss / seen, correct / seen


def _parts(n: int, most: int) -> list[slice]:
    """``n`` images as near-equal consecutive parts of at most ``most`` (one part when ``most`` <= 0)."""
    if most <= 0 or n <= most:
        return [slice(None)]
    k = math.ceil(n / most)
    return [slice(j * n // k, (j + 1) * n // k) for j in range(k)]


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[Any, Any]],
    num_classes: int,
    *,
    device: torch.device,
    amp: bool = False,
    cancel: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
    head: TaskHead | None = None,
) -> EvalResult:
    """Mean cross-entropy, accuracy and confusion matrix of ``model`` on ``batches`` (eval mode, no grad).

    With a regression or multilabel ``head``: its loss and metrics instead (:func:`_evaluate_task`).
    The model's training mode is restored afterwards. Raises :class:`TrainingCancelledError`.
    """
    import torch

    if head is not None and head.task != tasks.CLASSIFICATION:
        return _evaluate_task(model, batches, head, device=device, amp=amp, cancel=cancel, on_batch=on_batch)
    was_training = model.training
    model.eval()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    total_loss, seen = 0.0, 0
    try:
        with torch.inference_mode():
            for i, (inputs, labels) in enumerate(batches, start=1):
                _check_cancel(cancel, "validation")
                inputs = torch.as_tensor(inputs).to(device, non_blocking=True)
                labels = torch.as_tensor(labels).to(device, non_blocking=True)
                with _autocast(device, amp):
                    logits = model(inputs)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
                total_loss += float(loss)
                pred = logits.argmax(dim=1)
                np.add.at(confusion, (labels.cpu().numpy(), pred.cpu().numpy()), 1)
                seen += int(labels.shape[0])
                if on_batch is not None:
                    on_batch(i, total_loss / seen, float(np.trace(confusion)) / seen, int(labels.shape[0]))
    finally:
        model.train(was_training)
    if seen == 0:
        raise TrainingError("no validation batch was produced; the validation split is empty")
    return EvalResult(
        loss=total_loss / seen, accuracy=float(np.trace(confusion)) / seen, confusion=confusion, count=seen
    )


def _evaluate_task(
    model: torch.nn.Module,
    batches: Iterable[tuple[Any, Any]],
    head: TaskHead,
    *,
    device: torch.device,
    amp: bool = False,
    cancel: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
) -> EvalResult:
    """Validation of a regression or multilabel model: mean loss, the head's metrics, the raw outputs."""
    import torch

    was_training = model.training
    model.eval()
    outputs, targets = [], []
    total_loss, running, seen = 0.0, 0.0, 0
    try:
        with torch.inference_mode():
            for i, (inputs, target) in enumerate(batches, start=1):
                _check_cancel(cancel, "validation")
                inputs = torch.as_tensor(inputs).to(device, non_blocking=True)
                target = torch.as_tensor(target).to(device, non_blocking=True).float()
                with _autocast(device, amp):
                    out = model(inputs).float()
                total_loss += head.loss_sum(out, target)
                running += head.batch_score(out, target)
                outputs.append(out.cpu().numpy())
                targets.append(target.cpu().numpy())
                seen += int(target.shape[0])
                if on_batch is not None:
                    on_batch(i, total_loss / seen, running / seen, int(target.shape[0]))
    finally:
        model.train(was_training)
    if seen == 0:
        raise TrainingError("no validation batch was produced; the validation split is empty")
    out_np, tgt_np = np.concatenate(outputs), np.concatenate(targets)
    score, metrics, thresholds = head.metrics(out_np, tgt_np)
    accuracy = metrics.get("exact_match", 0.0) if head.task == tasks.MULTILABEL else 0.0
    return EvalResult(
        loss=total_loss / seen,
        accuracy=float(accuracy),
        confusion=np.zeros((0, 0), dtype=np.int64),
        count=seen,
        score=float(score),
        metrics=metrics,
        thresholds=thresholds,
        outputs=out_np,
        targets=tgt_np,
    )
