"""The options of a training run, shared by ``dli-perception train`` and its data-parallel workers
(``python -m dli_perception.train``): the arguments, the :class:`TrainConfig` they make, where checkpoints go."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options, shared by ``dli-perception train`` and ``python -m dli_perception.train``.

    The options are the ``cli`` rows of :data:`~dli_perception.core.training.options.TRAIN_OPTIONS`
    (the table the trainer node's parameters come from); the rest are this command's own.
    """
    p.add_argument(
        "dataset",
        type=Path,
        metavar="DATASET",
        help="dataset: DATASET/<class>/<image>, a regression/multilabel dataset with its manifest.jsonl, or a "
        "road-following folder as it is (xy_<x>_<y>_<id>.jpg, imported for the run)",
    )
    p.add_argument(
        "model_dir_arg", type=Path, nargs="?", metavar="MODEL_DIR", help="model directory to write (or --out)"
    )
    p.add_argument("--out", "-o", type=Path, metavar="MODEL_DIR", help="model directory to write (same as MODEL_DIR)")
    add_option_arguments(p)
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue from a checkpoint (last.pt or best.pt)")
    p.add_argument(
        "--export-cancelled",
        action="store_true",
        help="after Ctrl-C, export the best completed epoch instead of keeping MODEL_DIR as it was",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset of model.onnx (default 18)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


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
