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
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from dli_perception.commands.train_args import add_train_arguments, checkpoint_dir_for, config_from_args
from dli_perception.commands.train_console import TrainProgress, one_line_errors, quiet_logs, torch_threads
from dli_perception.commands.train_summary import print_summary
from dli_perception.commands.train_summary import summary_lines as summary_lines  # callers import it from here
from dli_perception.errors import ConfigError, TrainingCancelledError

EXIT_CANCELLED = 130
"""Exit code of a run stopped with Ctrl-C (the shell's convention for SIGINT)."""


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


# --------------------------------------------------------------------------- train


def run(args: argparse.Namespace) -> int:
    """Train, export and summarise; returns 0, or 130 when cancelled with Ctrl-C.

    With ``--nproc N`` the run is data-parallel through torchrun (:mod:`.train_launch`).
    """
    with one_line_errors():
        resolve_model_dir(args)
    if getattr(args, "nproc", None) is not None:
        from dli_perception.commands.train_launch import launch

        return launch(args)
    with one_line_errors():
        return _train(args)


def resolve_model_dir(args: argparse.Namespace) -> None:
    """``args.out`` from the MODEL_DIR argument or ``--out`` (one of them; both only when equal)."""
    given = getattr(args, "model_dir_arg", None)
    if given is not None and args.out is not None and given != args.out:
        raise ConfigError(f"MODEL_DIR {given} and --out {args.out} differ; give one of them")
    args.out = args.out or given
    args.model_dir_arg = None
    if args.out is None:
        raise ConfigError("no model directory: give MODEL_DIR after DATASET (or --out MODEL_DIR)")


def _train(args: argparse.Namespace) -> int:
    from dli_perception.core.export import DEFAULT_OPSET
    from dli_perception.core.training.service import TrainJob, export_job, train_job, training_dataset

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
    if config.weights == "none" and config.mode != "finetune":
        print(
            f"note: with random weights (--weights none) the {config.mode} mode trains a head on features that "
            "mean nothing yet; --mode finetune trains every layer from the first epoch",
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
    with (
        quiet_logs(getattr(args, "verbose", False)),
        torch_threads(args.torch_threads),
        training_dataset(job, say=lambda text: print(text, flush=True)) as job,
    ):
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
