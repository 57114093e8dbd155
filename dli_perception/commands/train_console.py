"""How a training run shows itself in a terminal, for ``dli-perception train``, its data-parallel workers and
``dli-perception export``: one progress bar per epoch, training loggers kept quiet meanwhile, package errors
on one line, torch's CPU threads."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from dli_perception.commands.train_summary import format_seconds
from dli_perception.errors import DliPerceptionError

QUIET_LOGGERS = (
    "dli_perception.core.training",
    "dli_perception.core.distributed",
    "dli_perception.core.export",
    "onnxscript",
    "onnx_ir",
    "torch.onnx",
)
"""Loggers whose INFO lines repeat what the progress bar and the summary show, or narrate the ONNX
exporter's passes (kept with --verbose)."""


class TrainProgress:
    """Turns :class:`~dli_perception.core.training.ProgressEvent`\\ s into one progress bar per epoch.

    The feature cache of head mode gets a bar of its own; validation batches show in the epoch
    bar's values. ``eta`` is the estimated time to the end of the whole run.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar = None
        self._key: tuple[str, int] | None = None
        self._done = 0
        self.last_event = None

    def __call__(self, event) -> None:
        self.last_event = event
        if not self.enabled:
            return
        if event.phase == "features":
            self._bar_for(("features", event.epoch), "backbone features", event.batches, "batch")
            self._update(event.batch, event.batches, eta=format_seconds(event.eta_s))
        elif event.phase == "train":
            self._bar_for(("epoch", event.epoch), self._epoch_desc(event), event.batches, "batch")
            self._update(
                event.batch,
                event.batches,
                loss=event.loss,
                acc=event.accuracy,
                err=event.metric if event.metric_name == "mean_error" else None,
                eta=format_seconds(event.eta_s),
            )
        elif event.phase == "val" and self._bar is not None:
            self._update(self._done, None, val=f"{event.batch}/{event.batches}", eta=format_seconds(event.eta_s))
        elif event.phase == "epoch":
            if self._key == ("epoch", event.epoch):
                self._update(
                    self._done,
                    None,
                    loss=event.loss,
                    acc=event.accuracy,
                    val_loss=event.val_loss,
                    val_acc=event.val_accuracy,
                    **({} if event.metric_name == "accuracy" else {f"val_{event.metric_name}": event.val_metric}),
                    eta=format_seconds(event.eta_s),
                )
            self.close()
        elif event.phase == "done":
            self.close()

    @staticmethod
    def _epoch_desc(event) -> str:
        return f"epoch {event.epoch}/{event.epochs} {event.stage}".rstrip()

    def _bar_for(self, key: tuple[str, int], desc: str, total: int, unit: str) -> None:
        if key == self._key and self._bar is not None:
            return
        from dli_perception.commands.progress import ProgressBar

        self.close()
        self._bar = ProgressBar(total or None, desc, unit=unit)
        self._key = key
        self._done = 0

    def _update(self, done: int, total: int | None, **values: Any) -> None:
        if self._bar is None:
            return
        self._done = done
        shown = {k: v for k, v in values.items() if v is not None}
        self._bar.update_to(done, total, **shown)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._key, self._done = None, None, 0


@contextlib.contextmanager
def quiet_logs(verbose: bool) -> Iterator[None]:
    """Raise the training loggers to WARNING while the progress bar shows the same facts."""
    if verbose:
        yield
        return
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Re-raise a package error whose message spans lines (torch's texts do) with the lines joined,
    so the CLI's error report stays one line."""
    try:
        yield
    except DliPerceptionError as exc:
        message = str(exc)
        if "\n" not in message:
            raise
        try:
            flat = type(exc)(" ".join(message.split()))
        except TypeError:
            raise exc from None
        raise flat from exc


def torch_threads(threads: int | None):
    """Torch limited to ``threads`` CPU threads inside the block (``--threads``; 0 or None: torch's default)."""
    from dli_perception.core.training.service import torch_threads

    return torch_threads(threads or 0)
