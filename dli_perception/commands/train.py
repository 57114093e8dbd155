"""``dli-perception train`` and ``dli-perception export``: fine-tune a classifier, write a model directory.

``train DATASET --out MODEL_DIR`` trains on an ImageFolder directory (the recorder's dataset)
with a progress bar per epoch on stderr (loss, accuracy, time left for the whole run), then
exports ``MODEL_DIR`` atomically (an existing one is replaced only by a finished export) and
prints a summary on stdout: per-epoch losses and accuracies, the best epoch, per-class
precision and recall, and where the model, report and checkpoints are.

Checkpoints (``best.pt``, ``last.pt``) go to ``--checkpoint-dir``, by default
``MODEL_DIR.checkpoints`` beside the model: they survive a cancelled run and feed
``--resume`` and ``dli-perception export``.

Ctrl-C cancels between two batches: the best completed epoch is kept in ``best.pt`` and
``MODEL_DIR`` is left as it was, unless ``--export-cancelled`` asks for the best epoch to be
exported anyway; the exit code is then 130. A second Ctrl-C aborts at once (checkpoints are
written atomically, so none is ever half-written).

``export CHECKPOINT --out MODEL_DIR`` turns a training checkpoint into a model directory.

Errors of the package (no images, missing pretrained weights, a bad option) end in one line
on stderr and exit code 1 (printed by :mod:`dli_perception.cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dli_perception.errors import ConfigError, DliPerceptionError, TrainingCancelledError

EXIT_CANCELLED = 130
"""Exit code of a run stopped with Ctrl-C (the shell's convention for SIGINT)."""

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand (``export`` lives in :mod:`dli_perception.commands.export`)."""
    p = sub.add_parser(
        "train",
        help="fine-tune a classifier on an image folder and export a model directory",
        description="Transfer learning on DATASET (one sub-folder of images per class); writes MODEL_DIR "
        "(model.onnx, labels.txt, metadata.json, checkpoint.pt, report/). Options left out take the "
        "defaults of TrainConfig (sized for a 4 GB Jetson).",
    )
    add_train_arguments(p)
    from dli_perception.commands.train_launch import add_launch_arguments

    add_launch_arguments(p)
    p.set_defaults(func=run)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options, shared by ``dli-perception train`` and ``python -m dli_perception.train``.

    The options are the ``cli`` rows of :data:`~dli_perception.core.training.options.TRAIN_OPTIONS`
    (the table the trainer node's parameters come from); the rest are this command's own.
    """
    p.add_argument("dataset", type=Path, metavar="DATASET", help="image folder: DATASET/<class>/<image>")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="MODEL_DIR", help="model directory to write")
    add_option_arguments(p)
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue from a checkpoint (last.pt or best.pt)")
    p.add_argument(
        "--export-cancelled",
        action="store_true",
        help="after Ctrl-C, export the best completed epoch instead of keeping MODEL_DIR as it was",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset of model.onnx (default 18)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


# --------------------------------------------------------------------------- options


def add_option_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per ``cli`` option of the training options table; omitted flags stay None (the default)."""
    from dli_perception.core.training.options import TRAIN_OPTIONS

    for option in TRAIN_OPTIONS:
        if not option.cli:
            continue
        kwargs: dict[str, Any] = {"dest": option.name, "default": None, "help": option.cli_help}
        if isinstance(option.default, bool):
            kwargs["action"] = "store_false" if option.default else "store_true"
        else:
            kwargs["type"] = option.cli_type or type(option.default)
            if option.choices:
                kwargs["choices"] = option.choices
            if option.metavar:
                kwargs["metavar"] = option.metavar
        p.add_argument(option.cli_flag, **kwargs)


def config_from_args(args: argparse.Namespace):
    """The :class:`TrainConfig` of the given options (omitted ones keep TrainConfig's defaults).

    Raises :class:`ConfigError` for invalid values.
    """
    from dli_perception.core.training.options import config_from_options

    return config_from_options(vars(args))


def checkpoint_dir_for(out: Path, given: Path | None) -> Path:
    """``--checkpoint-dir``, or ``MODEL_DIR.checkpoints`` beside the model directory."""
    from dli_perception.core.training.service import checkpoint_dir_for as core_checkpoint_dir_for

    return core_checkpoint_dir_for(out, given)


# --------------------------------------------------------------------------- progress


def format_seconds(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


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


# --------------------------------------------------------------------------- Ctrl-C


class CancelOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) sets ``cancel``; the next one raises KeyboardInterrupt.

    Only the main thread can own signal handlers; elsewhere this does nothing.
    """

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self._previous: Any = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.cancel.set()
        print(
            "\ncancelling after the current batch (Ctrl-C again to abort at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> CancelOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


@contextlib.contextmanager
def _quiet_logs(verbose: bool) -> Iterator[None]:
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
def _one_line_errors() -> Iterator[None]:
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


def _torch_threads(threads: int | None):
    """Torch limited to ``threads`` CPU threads inside the block (``--threads``; 0 or None: torch's default)."""
    from dli_perception.core.training.service import torch_threads

    return torch_threads(threads or 0)


# --------------------------------------------------------------------------- train


def run(args: argparse.Namespace) -> int:
    """Train, export and summarise; returns 0, or 130 when cancelled with Ctrl-C.

    With ``--nproc N`` the run is data-parallel through torchrun (:mod:`.train_launch`).
    """
    if getattr(args, "nproc", None) is not None:
        from dli_perception.commands.train_launch import launch

        return launch(args)
    with _one_line_errors():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from dli_perception.core.export import DEFAULT_OPSET
    from dli_perception.core.training.service import TrainJob, export_job, train_job

    config = config_from_args(args)
    out = args.out.expanduser()
    ckpt_dir = checkpoint_dir_for(out, args.checkpoint_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory; choose a directory path")
    print(
        f"training {config.backbone} ({config.mode}, {config.epochs} epochs, "
        f"input {config.preprocess.size}px, "
        f"weights {config.weights}) on {args.dataset}; checkpoints in {ckpt_dir}",
        flush=True,
    )
    job = TrainJob(
        config=config,
        dataset_dir=args.dataset.expanduser(),
        model_dir=out,
        checkpoint_dir=ckpt_dir,
        resume=args.resume.expanduser() if args.resume is not None else None,
    )
    progress = TrainProgress(enabled=getattr(args, "progress", True))
    with _quiet_logs(getattr(args, "verbose", False)), _torch_threads(args.torch_threads):
        try:
            with CancelOnInterrupt(job.cancel):
                result = train_job(job, on_progress=progress)
        except TrainingCancelledError:
            progress.close()
            print(f"cancelled while reading the dataset; nothing was trained and {out} was not touched")
            return EXIT_CANCELLED
        finally:
            progress.close()
        # Ctrl-C during the export raises KeyboardInterrupt: the export is abandoned, MODEL_DIR stays.
        exported = export_job(
            job,
            result,
            export_cancelled=args.export_cancelled,
            opset=args.opset or DEFAULT_OPSET,
        )
    print_summary(result, out if exported else None, sys.stdout)
    if result.cancelled:
        best = result.checkpoint_path
        if exported:
            print(f"cancelled: {out} holds the best completed epoch ({result.best_epoch})")
        elif best:
            print(
                f"cancelled: {out} was not replaced; the best epoch ({result.best_epoch}) is in {best} "
                f"(export it with: dli-perception export {best} --out {out}; continue with --resume "
                f"{Path(best).with_name('last.pt')})"
            )
        else:
            print(f"cancelled before the first epoch ended: nothing to export, {out} was not replaced")
        return EXIT_CANCELLED
    return 0


# --------------------------------------------------------------------------- summary


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Plain text table: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_lines(result, model_dir: Path | None) -> list[str]:
    """The end-of-run summary of a :class:`TrainResult` as lines of text."""
    from dli_perception.core.modeldir import REPORT_DIR
    from dli_perception.core.report import CONFUSION_FILE, CURVES_FILE, PER_CLASS_FILE

    lines = [""]
    rows = [
        [
            str(h.epoch),
            h.stage,
            _num(h.train_loss),
            _pct(h.train_acc),
            _num(h.val_loss),
            _pct(h.val_acc),
            f"{h.time_s:.2f}",
            "best" if h.epoch == result.best_epoch else ("*" if h.improved else ""),
        ]
        for h in result.history
    ]
    headers = ["epoch", "stage", "train loss", "train acc", "val loss", "val acc", "time s", ""]
    lines += _table(headers, rows, left=2) if rows else ["no epoch was completed"]
    lines.append("")
    if result.best_epoch:
        lines.append(
            f"best epoch {result.best_epoch}: validation accuracy {_pct(result.best_val_acc)}, "
            f"loss {_num(result.best_val_loss)} ({result.status}, {len(result.history)} epochs run)"
        )
    if result.per_class:
        lines.append("")
        lines += _table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [
                    name,
                    _num(m["precision"], 3),
                    _num(m["recall"], 3),
                    _num(m["f1"], 3),
                    str(int(m["support"])),
                ]
                for name, m in result.per_class.items()
            ],
        )
    ds = result.dataset
    lines.append("")
    lines.append(
        f"dataset {ds.root}: {ds.num_images} images in {len(ds.classes)} classes "
        f"({sum(ds.train_counts.values())} training, {sum(ds.val_counts.values())} validation)"
    )
    if ds.skipped:
        shown = ", ".join(f"{s['file']} ({s['reason']})" for s in ds.skipped[:5])
        more = f" and {len(ds.skipped) - 5} more" if len(ds.skipped) > 5 else ""
        lines.append(f"skipped {len(ds.skipped)} unreadable image(s): {shown}{more}")
    lines.append(f"weights: {result.weights.describe()}")
    lines.append(_timing_line(result.timings))
    if model_dir is not None:
        report = model_dir / REPORT_DIR
        files = [f for f in (CURVES_FILE, CONFUSION_FILE, f"{PER_CLASS_FILE}.md") if (report / f).is_file()]
        lines.append(f"model: {model_dir} (model.onnx, labels.txt, metadata.json, checkpoint.pt)")
        lines.append(f"report: {report}/ " + ", ".join(files) if files else f"report: {report}/")
    if result.checkpoint_path:
        lines.append(f"best checkpoint: {result.checkpoint_path}")
    return lines


def _timing_line(timings: Mapping[str, Any]) -> str:
    parts = [f"time {format_seconds(timings.get('total_s'))}"]
    if timings.get("features_s"):
        parts.append(f"feature cache {timings['features_s']:.2f} s")
    for stage, seconds in (timings.get("epoch_mean_s") or {}).items():
        parts.append(f"{stage} epoch {seconds:.3f} s")
    parts.append(f"on {timings.get('device', '?')}" + (" with AMP" if timings.get("amp") else ""))
    return ", ".join(parts)


def print_summary(result, model_dir: Path | None, file=None) -> None:
    """Print :func:`summary_lines` to ``file`` (stdout by default)."""
    print("\n".join(summary_lines(result, model_dir)), file=file or sys.stdout, flush=True)
