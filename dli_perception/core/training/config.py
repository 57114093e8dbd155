"""The options of a training run (:class:`TrainConfig`), checked when built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.core.training.backbones import backbone_spec
from dli_perception.errors import ConfigError

MODES = ("head", "finetune", "head-then-finetune")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
CLASS_BALANCE = ("sampler", "loss", "none")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Everything that decides a training run (written into checkpoints and the model metadata).

    Defaults fit a 4 GB Jetson (batch 16 at 224x224, AMP on CUDA). ``lr`` is the head's
    learning rate; the backbone gets ``lr * backbone_lr_factor`` when fine-tuned.
    ``head_epochs`` (head-then-finetune only; 0 = half of ``epochs``) are part of ``epochs``.
    ``early_stop_patience`` epochs without better validation accuracy end the run
    (0 = never); in head-then-finetune they end the head stage early.
    Augmentation (training only): random resized crop with area fraction ``crop_scale`` and
    aspect ratio ``crop_ratio`` of the evaluation view, colour jitter of brightness, contrast
    and saturation by up to ``color_jitter``, horizontal flip only if ``hflip`` (it changes the
    meaning of left/right classes). With the head-mode feature cache, ``feature_views`` > 1
    adds augmented views to the cache (view 0 is never augmented). ``task`` is ``auto`` (the dataset's
    own task) or one of :data:`~dli_perception.core.tasks.TASKS`; ``loss`` is the regression loss
    (``mse`` or ``smooth_l1``); regression runs never crop (a crop moves the target) and a flip
    negates x. ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (warn-only) for a CPU run; CUDA runs are not bit-exact.
    """

    task: str = "auto"
    loss: str = "mse"
    mode: str = "head-then-finetune"
    backbone: str = "resnet18"
    weights: str = "imagenet"
    download_weights: bool = False
    epochs: int = 10
    head_epochs: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    lr_step_epochs: int = 0
    lr_gamma: float = 0.1
    val_fraction: float = 0.2
    seed: int = 0
    early_stop_patience: int = 5
    augment: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: float = 0.2
    hflip: bool = False
    class_balance: str = "loss"
    num_workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    max_images_per_class: int | None = None
    feature_cache: bool = True
    feature_views: int = 1
    deterministic: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.preprocess, Mapping):
            self.preprocess = PreprocessConfig.from_dict(self.preprocess)
        if isinstance(self.amp, bool):
            self.amp = "on" if self.amp else "off"
        self.crop_scale = tuple(float(v) for v in self.crop_scale)
        self.crop_ratio = tuple(float(v) for v in self.crop_ratio)
        if self.max_images_per_class is not None and int(self.max_images_per_class) <= 0:
            self.max_images_per_class = None
        from dli_perception.core.training.targets import REGRESSION_LOSSES, TASK_CHOICES

        choices = {
            "task": TASK_CHOICES,
            "loss": REGRESSION_LOSSES,
            "mode": MODES,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "class_balance": CLASS_BALANCE,
            "device": DEVICES,
            "amp": AMP_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        backbone_spec(self.backbone)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.mode == "head-then-finetune":
            if self.epochs < 2:
                raise ConfigError("head-then-finetune needs epochs >= 2 (head epochs, then fine-tuning)")
            if not 0 <= self.head_epochs < self.epochs:
                raise ConfigError(
                    f"head_epochs must be in [0, epochs) (0 = epochs // 2), got {self.head_epochs} "
                    f"with epochs={self.epochs}"
                )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0 or self.lr > 10:
            raise ConfigError(f"lr must be in (0, 10], got {self.lr}")
        if not 0 <= self.backbone_lr_factor <= 10:
            raise ConfigError(f"backbone_lr_factor must be in [0, 10], got {self.backbone_lr_factor}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if not 0 < self.lr_gamma <= 1 or self.lr_step_epochs < 0:
            raise ConfigError("lr_gamma must be in (0, 1] and lr_step_epochs >= 0 (0 = epochs // 3)")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.early_stop_patience < 0:
            raise ConfigError(f"early_stop_patience must be >= 0 (0 = off), got {self.early_stop_patience}")
        lo, hi = self.crop_scale
        if len(self.crop_scale) != 2 or not 0 < lo <= hi <= 1:
            raise ConfigError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if len(self.crop_ratio) != 2 or not 0 < lo <= hi:
            raise ConfigError(f"crop_ratio must be (min, max) with 0 < min <= max, got {self.crop_ratio}")
        if not 0 <= self.color_jitter < 1:
            raise ConfigError(f"color_jitter must be in [0, 1), got {self.color_jitter}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.feature_views < 1:
            raise ConfigError(f"feature_views must be >= 1, got {self.feature_views}")

    @property
    def resolved_head_epochs(self) -> int:
        """Head epochs of this mode: all for ``head``, none for ``finetune``."""
        if self.mode == "head":
            return self.epochs
        if self.mode == "finetune":
            return 0
        return self.head_epochs or max(1, self.epochs // 2)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (checkpoints, metadata)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["preprocess"] = self.preprocess.to_dict()
        d["crop_scale"] = list(self.crop_scale)
        d["crop_ratio"] = list(self.crop_ratio)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused with :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(data))
