"""The one table of training options: it generates the trainer node's parameters and the CLI's flags.

Each :class:`TrainOption` names an option once (name, default, help, choices or range). The trainer
node declares ``node`` options as ROS parameters (:mod:`dli_perception.nodes.trainer_node`), the CLI
adds ``cli`` options as flags (:mod:`dli_perception.commands.train`), and both turn the values into a
:class:`~dli_perception.core.training.TrainConfig` with :func:`config_from_options`. Defaults are those
of ``TrainConfig``, so help texts never repeat a number by hand: the CLI appends ``(default X)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dli_perception.core.choices import check_value
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.core.training.backbones import BACKBONES
from dli_perception.core.training.config import (
    CLASS_BALANCE,
    DEVICES,
    MODES,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
)
from dli_perception.core.training.targets import REGRESSION_LOSSES, TASK_CHOICES

_DEFAULTS = TrainConfig()
_CONFIG_FIELDS = frozenset(f.name for f in fields(TrainConfig))
_SAME = object()


def non_empty(value: Any) -> str | None:
    """A check for text options: None when ``value`` has a non-blank text, else the reason."""
    return None if str(value).strip() else "must not be empty"


@dataclass(frozen=True)
class TrainOption:
    """One training option.

    ``default`` is also the node parameter's default unless ``node_default`` is given; ``help``
    says what the option means with its units (never its default). ``flag`` is the CLI flag
    (``""``: ``--`` and the name with dashes); a boolean becomes ``--name`` when it defaults to
    off and ``--no-name`` when it defaults to on. ``node``/``cli`` say where the option exists.
    """

    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | int | None = None
    max: float | int | None = None
    flag: str = ""
    metavar: str | None = None
    node: bool = True
    cli: bool = True
    node_default: Any = _SAME
    cli_type: Callable[[str], Any] | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def node_value(self) -> Any:
        """The node parameter's default."""
        return self.default if self.node_default is _SAME else self.node_default

    @property
    def cli_flag(self) -> str:
        if self.flag:
            return self.flag
        dashed = self.name.replace("_", "-")
        if isinstance(self.default, bool) and self.default:
            return f"--no-{dashed}"
        return f"--{dashed}"

    @property
    def cli_help(self) -> str:
        """The help text with the default the CLI uses appended (a ``--no-`` flag says what it turns off)."""
        text = self.help.rstrip(".")
        default = self.default
        if isinstance(default, bool):
            if default:
                return f"Turn off: {text[:1].lower()}{text[1:]} (on by default)."
            return f"{text} (off by default)."
        if default is None or default == "":
            return f"{text}."
        return f"{text} (default {default})."

    def validate(self, value: Any) -> str | None:
        """None when ``value`` is acceptable, else the reason (choices, then ``check``)."""
        return check_value(self.name, value, self.choices, self.check)


TRAIN_OPTIONS: tuple[TrainOption, ...] = (
    TrainOption(
        "dataset_dir",
        "~/dli_datasets/default",
        "Dataset to train on: one sub-directory of images per class (the recorder_node's dataset_dir); "
        "'~' is expanded.",
        cli=False,
        check=non_empty,
    ),
    TrainOption(
        "model_dir",
        "~/dli_models/default",
        "Model directory written after a successful run (replaced atomically); its path is published on model_updated.",
        cli=False,
        check=non_empty,
    ),
    TrainOption(
        "checkpoint_dir",
        "",
        "Where best.pt and last.pt go; empty: <model_dir>.checkpoints.",
        metavar="DIR",
        cli_type=Path,
    ),
    TrainOption(
        "task",
        _DEFAULTS.task,
        "What to learn: auto (the dataset's own task), classification (one class per image, cross-entropy), "
        "regression (an XY target per image, 2 outputs) or multilabel (a set of labels per image, BCE with "
        "per-label positive weights and thresholds tuned on the validation split).",
        choices=TASK_CHOICES,
    ),
    TrainOption(
        "loss",
        _DEFAULTS.loss,
        "Regression loss on the normalised XY targets: mse or smooth_l1 (ignored by the other tasks).",
        choices=REGRESSION_LOSSES,
    ),
    TrainOption(
        "mode",
        _DEFAULTS.mode,
        "head: train the new last layer on cached backbone features (fast); finetune: every layer; "
        "head-then-finetune: head epochs, then fine-tuning.",
        choices=MODES,
    ),
    TrainOption("epochs", _DEFAULTS.epochs, "Epochs in all.", min=1, max=100_000),
    TrainOption(
        "head_epochs",
        _DEFAULTS.head_epochs,
        "Head epochs of head-then-finetune; 0: half of epochs.",
        min=0,
        max=100_000,
    ),
    TrainOption(
        "batch_size", _DEFAULTS.batch_size, "Images per batch (16 fits a 4 GB Jetson at 224 px).", min=1, max=4096
    ),
    TrainOption(
        "lr",
        _DEFAULTS.lr,
        "Learning rate of the head; the backbone gets lr x backbone_lr_factor when fine-tuned.",
        min=1e-9,
        max=10.0,
    ),
    TrainOption(
        "backbone_lr_factor",
        _DEFAULTS.backbone_lr_factor,
        "Backbone learning rate = lr x this when fine-tuning.",
        min=0.0,
        max=10.0,
    ),
    TrainOption("optimizer", _DEFAULTS.optimizer, "Optimiser.", choices=OPTIMIZERS),
    TrainOption("schedule", _DEFAULTS.schedule, "Learning-rate schedule.", choices=SCHEDULES),
    TrainOption(
        "weights",
        _DEFAULTS.weights,
        "Initial weights: 'imagenet' (torch hub cache, no download), 'none' (random, much lower accuracy) "
        "or the path of a .pth state dict.",
        check=non_empty,
    ),
    TrainOption(
        "download_weights",
        _DEFAULTS.download_weights,
        "Download the ImageNet weights when they are not cached (needs network).",
    ),
    TrainOption(
        "backbone", _DEFAULTS.backbone, "Network whose last layer is replaced.", choices=tuple(sorted(BACKBONES))
    ),
    TrainOption(
        "image_size", _DEFAULTS.preprocess.size, "Model input size, pixels (square).", min=8, max=4096, flag="--size"
    ),
    TrainOption("val_fraction", _DEFAULTS.val_fraction, "Share of each class kept for validation.", min=0.01, max=0.99),
    TrainOption("seed", _DEFAULTS.seed, "Seed of the split, initialisation and augmentation.", min=0, max=2**31 - 1),
    TrainOption(
        "early_stop_patience",
        _DEFAULTS.early_stop_patience,
        "Stop after this many epochs without a better validation score (accuracy; mean error for regression, "
        "macro F1 for multilabel); 0: never.",
        min=0,
        max=100_000,
        flag="--early-stop",
        metavar="EPOCHS",
    ),
    TrainOption(
        "max_images_per_class",
        0,
        "Use at most this many images of each class (seeded subsample); 0: all.",
        min=0,
        max=10**9,
        flag="--max-per-class",
    ),
    TrainOption(
        "augment",
        _DEFAULTS.augment,
        "Random crops and colour jitter on training images (regression: colour jitter only, a crop moves the target).",
    ),
    TrainOption(
        "hflip",
        _DEFAULTS.hflip,
        "Random horizontal flips (they swap left and right classes; for regression they negate x).",
    ),
    TrainOption(
        "feature_cache",
        _DEFAULTS.feature_cache,
        "Cache the frozen backbone's features for head epochs instead of running it every epoch.",
    ),
    TrainOption("class_balance", _DEFAULTS.class_balance, "How rare classes are weighted.", choices=CLASS_BALANCE),
    TrainOption("device", _DEFAULTS.device, "Where to train (auto: CUDA when available).", choices=DEVICES),
    TrainOption(
        "num_workers",
        _DEFAULTS.num_workers,
        "DataLoader worker processes; keep 0 in a node (forking beside rclpy's threads is unsafe).",
        min=0,
        max=64,
        flag="--workers",
        node_default=0,
    ),
    TrainOption(
        "torch_threads",
        0,
        "CPU threads torch may use; 0: torch's default (all cores).",
        min=0,
        max=1024,
        flag="--threads",
    ),
    TrainOption(
        "progress_rate_hz",
        4.0,
        "Most batch progress messages per second on ~/progress, Hz.",
        min=0.1,
        max=1000.0,
        cli=False,
    ),
)
"""Every training option, in the order the node declares them and the CLI lists them."""

OPTIONS_BY_NAME: dict[str, TrainOption] = {o.name: o for o in TRAIN_OPTIONS}


def _cast(option: TrainOption, value: Any) -> Any:
    kind = type(option.default)
    if option.default is None or kind is str:
        return str(value).strip() if kind is str else value
    return kind(value)


def config_from_options(values: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of option values keyed by option name (node parameters or CLI flags).

    Options that are missing or None keep ``TrainConfig``'s defaults; ``image_size`` sets the
    preprocessing (:meth:`PreprocessConfig.for_size`); options that are not ``TrainConfig`` fields
    (paths, threads) are ignored. Raises :class:`~dli_perception.errors.ConfigError` when invalid.
    """
    config: dict[str, Any] = {}
    for name, value in values.items():
        option = OPTIONS_BY_NAME.get(name)
        if option is None or value is None:
            continue
        if name == "image_size":
            config["preprocess"] = PreprocessConfig.for_size(int(value))
        elif name in _CONFIG_FIELDS:
            config[name] = _cast(option, value)
    return TrainConfig(**config)
