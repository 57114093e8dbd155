"""Transfer learning for image classification: a torchvision backbone with a new head for N classes.

The DLI workflow on the robot: a few hundred images per class, an ImageNet-pretrained
ResNet-18 whose ``fc`` becomes ``Linear(512, N)``, then training in one of three modes:

* ``head``: the backbone is frozen; its features are computed once (``feature_cache``)
  and only the head is trained on them, which makes an epoch a matter of milliseconds;
* ``finetune``: every layer is trained, the backbone with ``lr * backbone_lr_factor``;
* ``head-then-finetune``: ``head_epochs`` head epochs, then fine-tuning for the rest.

The loop is a handful of plain functions (:func:`load_data`, :func:`train_one_epoch`,
:func:`evaluate`, :func:`train`). :func:`train` adds a stratified seeded validation split,
early stopping on validation accuracy, atomic best/last checkpoints, resume, cancel
between batches (a :class:`threading.Event`) and progress callbacks with an ETA.

Every random choice (initialisation, split, sample order, augmentation) is derived from
``TrainConfig.seed`` and the epoch number, so a CPU run is reproducible and a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.

Images always end in :func:`dli_perception.core.preprocess.normalize`: evaluation uses
:func:`~dli_perception.core.preprocess.resize` (the classifier's own path), augmentation
replaces only the geometric and colour part on the uint8 RGB image.

torch, torchvision and cv2 are imported inside functions, so this module (configs,
events, results) is cheap to import from a node.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dli_perception.core import fsutil
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS
from dli_perception.core.preprocess import PreprocessConfig, normalize, resize
from dli_perception.core.splits import stratified_split as split_stratified
from dli_perception.errors import (
    ConfigError,
    DatasetError,
    TrainingCancelledError,
    TrainingError,
    WeightsNotFoundError,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODES = ("head", "finetune", "head-then-finetune")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
CLASS_BALANCE = ("sampler", "loss", "none")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "on", "off")
CHECKPOINT_FORMAT = "dli_perception.train_checkpoint"
CHECKPOINT_VERSION = 1
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"

ProgressCallback = Callable[["ProgressEvent"], None]


# --------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision backbone and where its classification head sits.

    ``constructor`` names a function of :mod:`torchvision.models`, ``weights`` its ImageNet
    weights enum member (``"Enum.MEMBER"``), ``head`` the dotted path of the final ``Linear``
    and ``feature_dim`` its number of inputs (the feature size cached in head mode).
    """

    constructor: str
    weights: str
    feature_dim: int
    head: str


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 512, "fc"),
    "resnet34": BackboneSpec("resnet34", "ResNet34_Weights.IMAGENET1K_V1", 512, "fc"),
    "mobilenet_v3_small": BackboneSpec(
        "mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", 1024, "classifier.3"
    ),
}


def backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of ``name``; :class:`ConfigError` listing the known names otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


@dataclass
class WeightsInfo:
    """Where a model's initial weights came from (written into the model's metadata).

    ``source`` is ``"imagenet"``, ``"file"``, ``"checkpoint"`` (resumed) or ``"none"``;
    ``head_adapted`` says the loaded head had ``head_from`` outputs and was replaced.
    """

    source: str
    backbone: str
    name: str = ""
    path: str = ""
    sha256: str = ""
    head_adapted: bool = False
    head_from: int | None = None

    def describe(self) -> str:
        """One line for logs and ``metadata.json``'s ``weights_source``."""
        if self.source == "imagenet":
            return f"imagenet:{self.name}"
        if self.source in ("file", "checkpoint"):
            return f"{self.source}:{self.path}"
        return "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weights_enum(spec: BackboneSpec):
    import torchvision

    enum_name, member = spec.weights.split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def imagenet_weights_path(backbone: str = "resnet18") -> Path:
    """Where torchvision's cache keeps the ImageNet weights of ``backbone``.

    ``$TORCH_HOME/hub/checkpoints/<file>`` (``TORCH_HOME`` defaults to ``~/.cache/torch``),
    the file name being the last part of the weights' download URL.
    """
    import torch.hub

    weights = _weights_enum(backbone_spec(backbone))
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def get_head(model: torch.nn.Module, backbone: str) -> torch.nn.Module:
    """The classification head (final ``Linear``) of a model built by :func:`build_model`."""
    return model.get_submodule(backbone_spec(backbone).head)


def _set_head(model: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


@contextlib.contextmanager
def _headless(model: torch.nn.Module, backbone: str) -> Iterator[torch.nn.Module]:
    """Temporarily replace the head with ``Identity`` so ``model(x)`` returns backbone features."""
    import torch

    spec = backbone_spec(backbone)
    head = model.get_submodule(spec.head)
    _set_head(model, spec.head, torch.nn.Identity())
    try:
        yield model
    finally:
        _set_head(model, spec.head, head)


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a loaded weights file: plain, ours (export or training) or wrapped."""
    import torch

    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrainingError(
            f"{path} does not hold a model state dict (a mapping of parameter names to tensors); "
            "pass a .pth file saved with torch.save(model.state_dict(), path) or a dli_perception checkpoint"
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise TrainingError(
            f"cannot read weights file {path}: {exc}; it must be a PyTorch state dict "
            "(torch.save(model.state_dict(), path)) that loads with weights_only=True"
        ) from exc
    return _extract_state_dict(obj, path)


def _apply_weights(
    model: torch.nn.Module, backbone: str, state: Mapping[str, torch.Tensor], num_classes: int, origin: str
) -> tuple[bool, int | None]:
    """Load ``state`` into ``model`` (whose head already has ``num_classes`` outputs).

    A head of another size (ImageNet's 1000 classes) is dropped and stays freshly initialised.
    Returns ``(head_adapted, head_from)``.
    """
    spec = backbone_spec(backbone)
    head_keys = {f"{spec.head}.weight", f"{spec.head}.bias"}
    head_weight = state.get(f"{spec.head}.weight")
    head_from = int(head_weight.shape[0]) if head_weight is not None else None
    adapted = head_from != num_classes
    if adapted:
        state = {k: v for k, v in state.items() if k not in head_keys}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise TrainingError(
            f"weights from {origin} do not fit backbone {backbone!r}: {exc}; pass weights saved from a "
            f"{backbone} model or choose the matching backbone"
        ) from exc
    missing = [
        k for k in missing if not (adapted and k in head_keys) and not k.endswith("num_batches_tracked")
    ]
    if missing or unexpected:
        raise TrainingError(
            f"weights from {origin} do not fit backbone {backbone!r}: missing {missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}; pass weights saved from a {backbone} model "
            "or choose the matching backbone"
        )
    if adapted:
        logger.info(
            "%s adapted %s -> %d", spec.head, head_from if head_from is not None else "none", num_classes
        )
    else:
        logger.info("%s loaded with %d classes from %s", spec.head, num_classes, origin)
    return adapted, head_from


def build_model(
    backbone: str = "resnet18",
    *,
    num_classes: int,
    weights: str = "imagenet",
    download: bool = False,
) -> tuple[torch.nn.Module, WeightsInfo]:
    """Build ``backbone`` with its head replaced by ``Linear(feature_dim, num_classes)``.

    ``weights``: ``"imagenet"`` (torchvision's weights from the torch hub cache, see
    :func:`imagenet_weights_path`), ``"none"`` (random initialisation, explicit) or the path of a
    ``.pth`` file: a plain state dict (an ImageNet one: its 1000-class head is dropped) or a
    dli_perception checkpoint (``checkpoint.pt``, ``best.pt``; its head is kept when it has
    ``num_classes`` outputs). No download is attempted unless ``download=True`` (robots are
    often offline and a download without network can hang for minutes).

    Raises :class:`WeightsNotFoundError` when the weights are neither cached nor at the path,
    :class:`TrainingError` when a file does not fit the backbone, :class:`ConfigError` for
    an unknown backbone or a bad class count.
    """
    import torch
    import torchvision

    spec = backbone_spec(backbone)
    if int(num_classes) < 2:
        raise ConfigError(f"num_classes must be >= 2 for a classifier, got {num_classes}")
    num_classes = int(num_classes)
    weights = str(weights).strip()
    model = getattr(torchvision.models, spec.constructor)(weights=None)
    head = model.get_submodule(spec.head)
    if not isinstance(head, torch.nn.Linear) or head.in_features != spec.feature_dim:
        raise TrainingError(
            f"torchvision's {backbone} has no Linear({spec.feature_dim}, ...) at {spec.head!r}"
        )
    _set_head(model, spec.head, torch.nn.Linear(spec.feature_dim, num_classes))
    info = WeightsInfo(source="none", backbone=backbone)
    if weights.lower() == "none":
        logger.info(
            "%s built with random weights (weights='none'); %s has %d outputs",
            backbone,
            spec.head,
            num_classes,
        )
        return model, info
    if weights.lower() == "imagenet":
        enum = _weights_enum(spec)
        cached = imagenet_weights_path(backbone)
        info = WeightsInfo(source="imagenet", backbone=backbone, name=spec.weights, path=str(cached))
        if cached.is_file():
            state = _load_weights_file(cached)
        elif download:
            try:
                state = enum.get_state_dict(progress=False, weights_only=True)
            except Exception as exc:
                raise WeightsNotFoundError(
                    f"could not download {spec.weights} from {enum.url} ({exc}); put the file at {cached} "
                    "or pass weights=<path to a .pth state dict>"
                ) from exc
        else:
            raise WeightsNotFoundError(
                f"ImageNet weights for {backbone} ({spec.weights}) are not in the torch hub cache: expected "
                f"{cached}. Copy {os.path.basename(enum.url)} (from {enum.url}) there, or set TORCH_HOME to "
                f"a directory whose hub/checkpoints/ holds it, or pass weights=<path to a .pth state dict>, "
                "or allow a download (download_weights=True) on a machine with network access, "
                "or use weights='none' for random initialisation (much lower accuracy)"
            )
        info.sha256 = fsutil.sha256_file(cached) if cached.is_file() else ""
        info.head_adapted, info.head_from = _apply_weights(model, backbone, state, num_classes, str(cached))
        logger.info("%s weights: %s (%s)", backbone, spec.weights, cached)
        return model, info
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file {path} does not exist; pass the path of a .pth state dict, "
            f"'imagenet' to use torchvision's cache ({imagenet_weights_path(backbone)}) or 'none'"
        )
    state = _load_weights_file(path)
    info = WeightsInfo(
        source="file", backbone=backbone, path=str(path.resolve()), sha256=fsutil.sha256_file(path)
    )
    info.head_adapted, info.head_from = _apply_weights(model, backbone, state, num_classes, str(path))
    logger.info("%s weights loaded from %s", backbone, path)
    return model, info


# --------------------------------------------------------------------------- configuration


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
    adds augmented views to the cache (view 0 is never augmented). ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (warn-only) for a CPU run; CUDA runs are not bit-exact.
    """

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
        choices = {
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
            raise ConfigError(
                f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {self.crop_scale}"
            )
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


# --------------------------------------------------------------------------- data


Sample = tuple[str, int]


@dataclass
class DatasetSummary:
    """What a run trained on: usable image counts, skipped files and a content hash.

    ``sha256`` covers every readable image (sorted relative path + file sha256), so two runs
    with the same hash saw the same files. ``skipped`` lists unreadable images with the reason.
    """

    root: str
    classes: list[str]
    counts: dict[str, int]
    train_counts: dict[str, int] = field(default_factory=dict)
    val_counts: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored_files: int = 0
    sha256: str = ""

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_images"] = self.num_images
        d["num_skipped"] = len(self.skipped)
        return d


@dataclass
class TrainData:
    """A loaded dataset: class names (sorted folder names), training and validation samples."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    summary: DatasetSummary


def _cv2():
    import cv2  # deferred: costs ~100 ms at import

    return cv2


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Decode image file bytes to HxWx3 uint8 RGB (grey and alpha images converted); None if undecodable."""
    cv2 = _cv2()
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; :class:`DatasetError` if missing or undecodable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"cannot read image {path}: {exc}; was the dataset changed during training?"
        ) from exc
    image = decode_rgb(data)
    if image is None:
        raise DatasetError(f"{path} is not a decodable image; remove or replace it")
    return image


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_image_folder(
    root: str | os.PathLike,
    *,
    cancel: threading.Event | None = None,
) -> tuple[list[str], list[Sample], DatasetSummary]:
    """Read an ImageFolder directory ``<root>/<class>/**/<image>``; every image is decoded once.

    Classes are the sorted visible sub-directories. Files without an image extension are
    ignored (counted), images that cannot be decoded are skipped and listed in the summary
    with a warning. Raises :class:`DatasetError` for a missing root, fewer than two classes
    or a class without a usable image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist; record images first or check the path")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if len(classes) < 2:
        raise DatasetError(
            f"{root} has {len(classes)} class folder(s) {classes}; a classifier needs at least two "
            "(one sub-directory of images per class)"
        )
    samples: list[Sample] = []
    skipped: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    ignored = 0
    digest_lines: list[str] = []
    for label, name in enumerate(classes):
        n = 0
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file()
            and all(_visible(part) for part in p.relative_to(root).parents if part != Path("."))
            and _visible(p)
        )
        for path in files:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelledError("cancelled while reading the dataset")
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                skipped.append({"file": rel, "reason": f"unreadable: {exc.strerror or exc}"})
                continue
            if decode_rgb(data) is None:
                skipped.append({"file": rel, "reason": "not a decodable image"})
                continue
            digest_lines.append(f"{rel}\t{hashlib.sha256(data).hexdigest()}\n")
            samples.append((str(path), label))
            n += 1
        counts[name] = n
    for item in skipped:
        logger.warning("skipped %s: %s", item["file"], item["reason"])
    if skipped:
        logger.warning(
            "%d of %d image files in %s could not be read and were skipped",
            len(skipped),
            len(skipped) + len(samples),
            root,
        )
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(
            f"class folder(s) {empty} in {root} hold no usable image; add images or remove the folder(s)"
        )
    digest = hashlib.sha256("".join(sorted(digest_lines)).encode("utf-8")).hexdigest()
    summary = DatasetSummary(
        root=str(root.resolve()),
        classes=classes,
        counts=counts,
        skipped=skipped,
        ignored_files=ignored,
        sha256=digest,
    )
    return classes, samples, summary


def load_data(
    dataset: str | os.PathLike,
    config: TrainConfig,
    *,
    cancel: threading.Event | None = None,
) -> TrainData:
    """Scan an ImageFolder directory, subsample (``max_images_per_class``) and split it (seeded)."""
    classes, samples, summary = scan_image_folder(dataset, cancel=cancel)
    if config.max_images_per_class:
        kept: list[Sample] = []
        for label in range(len(classes)):
            members = [s for s in samples if s[1] == label]
            if len(members) > config.max_images_per_class:
                rng = np.random.default_rng([config.seed, 2, label])
                pick = sorted(rng.choice(len(members), config.max_images_per_class, replace=False).tolist())
                members = [members[i] for i in pick]
            kept.extend(members)
        samples = kept
    labels = [s[1] for s in samples]
    too_few = {c: labels.count(i) for i, c in enumerate(classes) if labels.count(i) < 2}
    if too_few:
        raise DatasetError(
            f"classes with fewer than two usable images in {summary.root}: {too_few}; each class needs at "
            "least two (one for training, one for validation): add images"
        )
    train_idx, val_idx = split_stratified(labels, config.val_fraction, config.seed)
    train = [samples[i] for i in train_idx]
    val = [samples[i] for i in val_idx]
    summary.train_counts = {c: sum(1 for s in train if s[1] == i) for i, c in enumerate(classes)}
    summary.val_counts = {c: sum(1 for s in val if s[1] == i) for i, c in enumerate(classes)}
    logger.info(
        "dataset %s: %d classes, %d training and %d validation images",
        summary.root,
        len(classes),
        len(train),
        len(val),
    )
    return TrainData(classes=classes, train=train, val=val, summary=summary)


def _view_rect(h: int, w: int, cfg: PreprocessConfig) -> tuple[float, float, float, float]:
    """The part (x, y, width, height in pixels) of an HxW image that :func:`resize` turns into the input."""
    if cfg.resize_mode == "squash":
        return 0.0, 0.0, float(w), float(h)
    side = min(h, w) * cfg.size / cfg.resize_size
    return (w - side) / 2, (h - side) / 2, side, side


def augment_image(
    image: np.ndarray, preprocess: PreprocessConfig, config: TrainConfig, rng: np.random.Generator
) -> np.ndarray:
    """Training view of an HxWx3 uint8 RGB image: size x size x 3 uint8, ready for ``normalize``.

    A random resized crop of the evaluation view (the region :func:`resize` would use; area
    fraction in ``crop_scale``, aspect ratio in ``crop_ratio``), colour jitter and an
    optional horizontal flip.
    """
    cv2 = _cv2()
    h, w = image.shape[:2]
    vx, vy, vw, vh = _view_rect(h, w, preprocess)
    fx, fy, fw, fh = 0.0, 0.0, 1.0, 1.0  # crop in view coordinates (fractions)
    log_lo, log_hi = math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])
    for _ in range(10):
        area = rng.uniform(*config.crop_scale)
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if cw <= 1.0 and ch <= 1.0:
            fx, fy, fw, fh = rng.uniform(0, 1 - cw), rng.uniform(0, 1 - ch), cw, ch
            break
    x0 = round(vx + fx * vw)
    y0 = round(vy + fy * vh)
    x1 = max(x0 + 1, min(w, round(vx + (fx + fw) * vw)))
    y1 = max(y0 + 1, min(h, round(vy + (fy + fh) * vh)))
    interp = getattr(
        cv2,
        {
            "bilinear": "INTER_LINEAR",
            "nearest": "INTER_NEAREST",
            "area": "INTER_AREA",
            "bicubic": "INTER_CUBIC",
        }[preprocess.interpolation],
    )
    out = cv2.resize(image[y0:y1, x0:x1], (preprocess.size, preprocess.size), interpolation=interp)
    s = config.color_jitter
    if s > 0:
        pix = out.astype(np.float32)
        pix *= rng.uniform(1 - s, 1 + s)  # brightness
        grey = pix @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        pix = (pix - grey.mean()) * rng.uniform(1 - s, 1 + s) + grey.mean()  # contrast
        grey = (pix @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        pix = grey + (pix - grey) * rng.uniform(1 - s, 1 + s)  # saturation
        out = np.clip(np.rint(pix), 0, 255).astype(np.uint8)
    if config.hflip and rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
    return out


class ImageSamples:
    """Map-style dataset of ``(path, label)`` samples for a ``DataLoader``: (float32 CHW, label).

    With ``augment`` set, sample ``i`` in epoch ``e`` is augmented with an RNG seeded by
    ``(seed, e, i)``: the same views whatever the worker count, and again after a resume.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocess: PreprocessConfig,
        augment: TrainConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.preprocess = preprocess
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[index]
        image = read_rgb(path)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, 3, int(self.epoch), int(index)])
            image = augment_image(image, self.preprocess, self.augment, rng)
        else:
            image = resize(image, self.preprocess)
        return normalize(image, self.preprocess), label


# --------------------------------------------------------------------------- events and results


@dataclass
class ProgressEvent:
    """One progress report.

    ``phase`` is ``"load"``, ``"features"`` (head-mode feature cache), ``"train"``, ``"val"``,
    ``"epoch"`` (an epoch ended: ``loss``/``accuracy`` are the training values and ``val_*``
    are set) or ``"done"``. ``epoch`` counts from 1 (0 before the first epoch), ``batch``
    from 1; ``loss``/``accuracy`` are running means of the current phase; ``eta_s`` is the
    estimated time to the end of the run in seconds (None until something was timed).
    """

    phase: str
    epoch: int
    epochs: int
    batch: int = 0
    batches: int = 0
    loss: float | None = None
    accuracy: float | None = None
    eta_s: float | None = None
    stage: str = ""
    val_loss: float | None = None
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochStats:
    """History entry of one epoch; ``time_s`` covers training and validation, not checkpoint writes."""

    epoch: int
    stage: str
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    backbone_lr: float | None
    time_s: float
    improved: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """Validation outcome: mean loss, accuracy (0-1), confusion matrix (rows true, columns predicted)."""

    loss: float
    accuracy: float
    confusion: np.ndarray
    count: int


def per_class_metrics(confusion: Any, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = true class).

    A precision or recall whose denominator is zero is reported as 0.0.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(classes):
        tp = float(cm[i, i])
        predicted = float(cm[:, i].sum())
        support = float(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
    return out


@dataclass
class TrainResult:
    """Outcome of :func:`train`. ``model`` holds the best epoch's weights, on the CPU, in eval mode.

    ``status`` is ``"completed"``, ``"early_stopped"`` or ``"cancelled"``; ``confusion`` and
    ``per_class`` are of the best epoch's validation; ``timings`` holds seconds: ``load_s``,
    ``features_s`` (feature cache), ``epoch_mean_s`` per stage, ``checkpoint_s``, ``total_s``.
    """

    model: Any
    classes: list[str]
    config: TrainConfig
    weights: WeightsInfo
    history: list[EpochStats]
    best_epoch: int
    best_val_acc: float
    best_val_loss: float | None
    confusion: list[list[int]]
    per_class: dict[str, dict[str, float]]
    timings: dict[str, Any]
    status: str
    dataset: DatasetSummary
    checkpoint_path: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def backbone(self) -> str:
        return self.config.backbone

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.config.preprocess

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (everything but the model): for metadata, logs and the node."""
        return {
            "status": self.status,
            "classes": list(self.classes),
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "best_val_loss": self.best_val_loss,
            "epochs_run": len(self.history),
            "confusion": self.confusion,
            "per_class": self.per_class,
            "history": [h.to_dict() for h in self.history],
            "timings": self.timings,
            "weights": self.weights.to_dict(),
            "dataset": self.dataset.to_dict(),
            "config": self.config.to_dict(),
            "checkpoint_path": self.checkpoint_path,
        }


# --------------------------------------------------------------------------- loop functions


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
) -> tuple[float, float]:
    """One pass over ``batches`` of (inputs, labels); returns (mean loss, accuracy 0-1).

    The model is used in the mode the caller set (``train()`` to fine-tune, ``eval()`` for a
    frozen backbone's batch norm). Raises :class:`TrainingCancelledError` when ``cancel`` is
    set before a batch; the parameters then hold the last completed step.
    """
    import torch

    total_loss, correct, seen = 0.0, 0, 0
    for i, (inputs, labels) in enumerate(batches, start=1):
        _check_cancel(cancel, "training")
        inputs = torch.as_tensor(inputs).to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            logits = model(inputs)
            loss = criterion(logits.float(), labels)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training loss became {loss.item()} at batch {i}; lower lr (now "
                f"{optimizer.param_groups[-1]['lr']:.3g}) or check the images"
            )
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = int(labels.shape[0])
        total_loss += float(loss.detach()) * n
        correct += int((logits.detach().argmax(dim=1) == labels).sum())
        seen += n
        if on_batch is not None:
            on_batch(i, total_loss / seen, correct / seen, n)
    if seen == 0:
        raise TrainingError("no training batch was produced; the training split is empty")
    return total_loss / seen, correct / seen


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[Any, Any]],
    num_classes: int,
    *,
    device: torch.device,
    amp: bool = False,
    cancel: threading.Event | None = None,
    on_batch: BatchCallback | None = None,
) -> EvalResult:
    """Mean cross-entropy, accuracy and confusion matrix of ``model`` on ``batches`` (eval mode, no grad).

    The model's training mode is restored afterwards. Raises :class:`TrainingCancelledError`.
    """
    import torch

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


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> None:
    """Write a checkpoint dict atomically (temp file + ``os.replace``): the old file survives a crash."""
    import torch

    with fsutil.atomic_open(path) as f:
        torch.save(dict(checkpoint), f)


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint (``best.pt``, ``last.pt``) with ``weights_only=True``; check its format."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainingError(
            f"checkpoint {path} does not exist; pass the best.pt or last.pt of an earlier run"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a dli_perception training checkpoint (best.pt or last.pt)")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"{path} has checkpoint format version {ckpt.get('format_version')}, this version reads "
            f"{CHECKPOINT_VERSION}; train again"
        )
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any]) -> torch.nn.Module:
    """Rebuild the model of a training checkpoint (CPU, eval mode)."""
    model, _ = build_model(ckpt["backbone"], num_classes=len(ckpt["classes"]), weights="none")
    model.load_state_dict(ckpt["model"])
    return model.eval()


def result_from_checkpoint(path: str | os.PathLike) -> TrainResult:
    """A :class:`TrainResult` rebuilt from a training checkpoint (e.g. ``best.pt``), ready to export."""
    ckpt = load_training_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"])
    weights = WeightsInfo(**ckpt["weights"])
    history = [EpochStats(**h) for h in ckpt["history"]]
    dataset = DatasetSummary(
        **{k: v for k, v in ckpt["dataset"].items() if k not in ("num_images", "num_skipped")}
    )
    confusion = ckpt.get("best_confusion") or []
    return TrainResult(
        model=model_from_checkpoint(ckpt),
        classes=list(ckpt["classes"]),
        config=config,
        weights=weights,
        history=history,
        best_epoch=int(ckpt["best_epoch"]),
        best_val_acc=float(ckpt["best_val_acc"]),
        best_val_loss=float(ckpt["best_val_loss"]) if math.isfinite(ckpt["best_val_loss"]) else None,
        confusion=confusion,
        per_class=per_class_metrics(confusion, ckpt["classes"]) if confusion else {},
        timings=dict(ckpt.get("timings", {})),
        status=str(ckpt.get("status", "completed")),
        dataset=dataset,
        checkpoint_path=str(Path(path).resolve()),
    )


# --------------------------------------------------------------------------- train


def _mix(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _resolve_device(name: str) -> torch.device:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' was asked for but torch.cuda.is_available() is False; use 'auto' or 'cpu'"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if enabled:
            torch.use_deterministic_algorithms(before, warn_only=warn_only)


class _Eta:
    """Seconds per image of each kind of work, to estimate the time left."""

    # Cost of one image relative to a forward pass; used for kinds not timed yet.
    FACTORS: ClassVar[dict[str, float]] = {
        "features": 1.0,
        "val_head": 1.0,
        "val_finetune": 1.0,
        "train_head": 1.2,
        "train_finetune": 3.0,
        "train_head_cached": 0.0,
        "val_head_cached": 0.0,
    }

    def __init__(self) -> None:
        self.rate: dict[str, float] = {}

    def observe(self, kind: str, seconds: float, images: int) -> None:
        if images <= 0:
            return
        r = seconds / images
        old = self.rate.get(kind)
        self.rate[kind] = r if old is None else 0.8 * old + 0.2 * r

    def per_image(self, kind: str) -> float | None:
        if kind in self.rate:
            return self.rate[kind]
        factor = self.FACTORS.get(kind, 1.0)
        if factor == 0.0:
            return 0.0
        bases = [self.rate[k] / f for k, f in self.FACTORS.items() if k in self.rate and f > 0]
        return factor * bases[0] if bases else None

    def estimate(self, work: Mapping[str, int]) -> float | None:
        total = 0.0
        for kind, images in work.items():
            if images <= 0:
                continue
            r = self.per_image(kind)
            if r is None:
                return None
            total += r * images
        return total


class _Run:
    """State of one :func:`train` call (model, stage, optimiser, feature cache, bookkeeping)."""

    def __init__(
        self,
        data: TrainData,
        config: TrainConfig,
        cancel: threading.Event | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        import torch

        self.data = data
        self.cfg = config
        self.cancel = cancel
        self.on_progress = on_progress
        self.device = _resolve_device(config.device)
        self.amp = self.device.type == "cuda" and config.amp in ("auto", "on")
        if config.amp == "on" and not self.amp:
            logger.warning("amp='on' needs CUDA; training in float32 on %s", self.device)
        self.num_classes = len(data.classes)
        self.batch_size = config.batch_size  # per process: a distributed run splits the batch
        self.train_labels = np.asarray([s[1] for s in data.train], dtype=np.int64)
        self.finetune_start = config.resolved_head_epochs + 1
        self.stage = ""
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.scaler: Any = torch.amp.GradScaler("cuda") if self.amp else None
        self.features: dict[str, Any] | None = None
        self.eta = _Eta()
        self.callback_failed = False
        counts = np.bincount(self.train_labels, minlength=self.num_classes).astype(np.float64)
        weight = None
        if config.class_balance == "loss":
            weight = torch.as_tensor(counts.sum() / (self.num_classes * counts), dtype=torch.float32)
        self.criterion = torch.nn.CrossEntropyLoss(weight=weight).to(self.device)
        self.sample_prob = (1.0 / counts)[self.train_labels]
        self.sample_prob /= self.sample_prob.sum()
        self.timings: dict[str, Any] = {
            "features_s": 0.0,
            "checkpoint_s": 0.0,
            "device": str(self.device),
            "amp": self.amp,
            "feature_cache": config.feature_cache,
        }

    # -- helpers
    def emit(self, event: ProgressEvent) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(event)
        except Exception:
            if not self.callback_failed:
                logger.exception("progress callback failed; training continues without reporting this")
            self.callback_failed = True

    def stage_of(self, epoch: int) -> str:
        return "head" if epoch < self.finetune_start else "finetune"

    def cached(self, stage: str) -> bool:
        return stage == "head" and self.cfg.feature_cache

    def kind(self, what: str, stage: str) -> str:
        return f"{what}_{stage}" + ("_cached" if self.cached(stage) else "")

    def remaining(self, epoch: int, phase: str, done: int) -> dict[str, int]:
        """Images of work left from a point inside ``epoch`` (``phase`` with ``done`` images done)."""
        n_train, n_val = len(self.data.train), len(self.data.val)
        work: dict[str, int] = {}

        def add(kind: str, n: int) -> None:
            work[kind] = work.get(kind, 0) + max(0, n)

        stage = self.stage_of(max(epoch, 1))
        if phase == "features":
            add("features", (n_train * self.cfg.feature_views + n_val) - done)
        elif phase == "train":
            add(self.kind("train", stage), n_train - done)
            add(self.kind("val", stage), n_val)
        elif phase == "val":
            add(self.kind("val", stage), n_val - done)
        features_pending = self.features is None and phase != "features"
        for e in range(max(epoch, 0) + 1, self.cfg.epochs + 1):
            s = self.stage_of(e)
            if self.cached(s) and features_pending:
                add("features", n_train * self.cfg.feature_views + n_val)
                features_pending = False
            add(self.kind("train", s), n_train)
            add(self.kind("val", s), n_val)
        return work

    def loader(self, samples: Sequence[Sample], order: Sequence[int] | None, augment: bool, epoch: int):
        import torch

        dataset = ImageSamples(
            samples, self.cfg.preprocess, self.cfg if augment else None, seed=self.cfg.seed
        )
        dataset.epoch = epoch
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=list(order) if order is not None else None,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    def epoch_order(self, epoch: int) -> list[int]:
        """Training sample order of ``epoch``: weighted draw (``sampler``) or a permutation."""
        rng = np.random.default_rng([self.cfg.seed, 4, epoch])
        n = len(self.data.train)
        if self.cfg.class_balance == "sampler":
            order = rng.choice(n, size=n, replace=True, p=self.sample_prob).tolist()
        else:
            order = rng.permutation(n).tolist()
        if len(order) > 1 and len(order) % self.batch_size == 1:
            order = order[:-1]  # a batch of one breaks batch norm in training mode
        return order

    # -- stages
    def setup_stage(self, model: torch.nn.Module, stage: str, ckpt: Mapping[str, Any] | None) -> None:
        import torch

        cfg = self.cfg
        head = get_head(model, cfg.backbone)
        head_ids = {id(p) for p in head.parameters()}
        backbone_params = [p for p in model.parameters() if id(p) not in head_ids]
        if stage == "head":
            model.eval()  # frozen backbone: batch norm keeps its statistics
            for p in backbone_params:
                p.requires_grad_(False)
            for p in head.parameters():
                p.requires_grad_(True)
            groups = [{"params": list(head.parameters()), "lr": cfg.lr, "name": "head"}]
            stage_epochs = self.finetune_start - 1
        else:
            self.features = None
            model.train()
            for p in model.parameters():
                p.requires_grad_(True)
            groups = [
                {"params": backbone_params, "lr": cfg.lr * cfg.backbone_lr_factor, "name": "backbone"},
                {"params": list(head.parameters()), "lr": cfg.lr, "name": "head"},
            ]
            stage_epochs = cfg.epochs - self.finetune_start + 1
        if cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        stage_epochs = max(1, stage_epochs)
        if cfg.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=stage_epochs)
        elif cfg.schedule == "step":
            step = cfg.lr_step_epochs or max(1, stage_epochs // 3)
            self.scheduler = torch.optim.lr_scheduler.StepLR(
                self.optimizer, step_size=step, gamma=cfg.lr_gamma
            )
        else:
            self.scheduler = None
        if ckpt is not None and ckpt.get("stage") == stage:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler") is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
        self.stage = stage
        logger.info(
            "stage %s: %d trainable parameters",
            stage,
            sum(p.numel() for p in model.parameters() if p.requires_grad),
        )

    def build_feature_cache(self, model: torch.nn.Module) -> None:
        import torch

        cfg = self.cfg
        t0 = time.perf_counter()
        views: list[torch.Tensor] = []
        n_all = len(self.data.train) * cfg.feature_views + len(self.data.val)
        batches_per_view = math.ceil(len(self.data.train) / self.batch_size)
        total_batches = batches_per_view * cfg.feature_views + math.ceil(len(self.data.val) / self.batch_size)
        state = {"batch0": 0, "done": 0, "t": time.perf_counter()}

        def on_batch(i: int, _loss: float, _acc: float, n: int) -> None:
            now = time.perf_counter()
            self.eta.observe("features", now - state["t"], n)
            state["t"] = now
            state["done"] += n
            self.emit(
                ProgressEvent(
                    "features",
                    self.current_epoch,
                    cfg.epochs,
                    state["batch0"] + i,
                    total_batches,
                    eta_s=self.eta.estimate(self.remaining(self.current_epoch, "features", state["done"])),
                    stage="head",
                    message=f"caching backbone features ({n_all} images)",
                )
            )

        for view in range(cfg.feature_views):
            loader = self.loader(self.data.train, None, augment=view > 0, epoch=1_000_000 + view)
            f, _ = extract_features(
                model,
                cfg.backbone,
                loader,
                device=self.device,
                amp=self.amp,
                cancel=self.cancel,
                on_batch=on_batch,
            )
            views.append(f)
            state["batch0"] += batches_per_view
        val_f, val_y = extract_features(
            model,
            cfg.backbone,
            self.loader(self.data.val, None, False, 0),
            device=self.device,
            amp=self.amp,
            cancel=self.cancel,
            on_batch=on_batch,
        )
        self.features = {
            "train": torch.stack(views).to(self.device),
            "train_y": torch.as_tensor(self.train_labels).to(self.device),
            "val": val_f.to(self.device),
            "val_y": val_y.to(self.device),
        }
        self.timings["features_s"] += time.perf_counter() - t0
        logger.info("cached %d feature vectors in %.2f s", n_all, time.perf_counter() - t0)

    def feature_batches(self, order: Sequence[int], epoch: int) -> Iterator[tuple[Any, Any]]:
        import torch

        f = self.features
        assert f is not None
        idx = torch.as_tensor(list(order), dtype=torch.long, device=self.device)
        if self.cfg.feature_views > 1:
            rng = np.random.default_rng([self.cfg.seed, 5, epoch])
            view = torch.as_tensor(
                rng.integers(0, self.cfg.feature_views, size=len(order)), device=self.device
            )
        else:
            view = torch.zeros_like(idx)
        for start in range(0, len(order), self.batch_size):
            sl = slice(start, start + self.batch_size)
            yield f["train"][view[sl], idx[sl]], f["train_y"][idx[sl]]

    def val_feature_batches(self) -> Iterator[tuple[Any, Any]]:
        f = self.features
        assert f is not None
        for start in range(0, len(f["val_y"]), self.batch_size):
            yield (
                f["val"][start : start + self.batch_size],
                f["val_y"][start : start + self.batch_size],
            )

    current_epoch = 0

    def train_net(self, net: torch.nn.Module) -> torch.nn.Module:
        """The module the optimiser steps through (a distributed run wraps it for gradient averaging)."""
        return net

    def eval_net(self, net: torch.nn.Module) -> torch.nn.Module:
        """The module validated after training an epoch (a distributed run first syncs its buffers)."""
        return net

    def run_epoch(
        self, model: torch.nn.Module, epoch: int, best_acc: float
    ) -> tuple[float, float, EvalResult]:
        import torch

        cfg = self.cfg
        self.current_epoch = epoch
        stage = self.stage
        torch.manual_seed(_mix(cfg.seed, 6, epoch))
        order = self.epoch_order(epoch)
        cached = self.cached(stage)
        if cached:
            net = get_head(model, cfg.backbone)
            train_batches: Iterable[Any] = self.feature_batches(order, epoch)
            val_batches: Iterable[Any] = self.val_feature_batches()
        else:
            net = model
            train_batches = self.loader(self.data.train, order, augment=cfg.augment, epoch=epoch)
            val_batches = self.loader(self.data.val, None, augment=False, epoch=epoch)
        n_train_batches = math.ceil(len(order) / self.batch_size)
        n_val_batches = math.ceil(len(self.data.val) / self.batch_size)
        state = {"t": time.perf_counter(), "done": 0}
        best = None if best_acc < 0 else best_acc

        def progress(phase: str, batches: int):
            kind = self.kind(phase, stage)

            def on_batch(i: int, loss: float, acc: float, n: int) -> None:
                now = time.perf_counter()
                self.eta.observe(kind, now - state["t"], n)
                state["t"] = now
                state["done"] += n
                eta = self.eta.estimate(self.remaining(epoch, phase, state["done"]))
                self.emit(
                    ProgressEvent(
                        phase, epoch, cfg.epochs, i, batches, loss, acc, eta, stage, best_val_accuracy=best
                    )
                )

            return on_batch

        train_loss, train_acc = train_one_epoch(
            self.train_net(net),
            train_batches,
            self.criterion,
            self.optimizer,
            device=self.device,
            scaler=self.scaler,
            amp=self.amp,
            cancel=self.cancel,
            on_batch=progress("train", n_train_batches),
        )
        state.update(t=time.perf_counter(), done=0)
        result = evaluate(
            self.eval_net(net),
            val_batches,
            self.num_classes,
            device=self.device,
            amp=self.amp,
            cancel=self.cancel,
            on_batch=progress("val", n_val_batches),
        )
        return train_loss, train_acc, result


def _copy_if(state: dict[str, Any], copy: bool) -> dict[str, Any]:
    import copy as _copy

    return _copy.deepcopy(state) if copy else state


def _link_or_save(src: Path, dest: Path, checkpoint: Mapping[str, Any]) -> None:
    """Make ``dest`` a hard link of the just-written ``src`` atomically; write it in full where links fail."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(src, tmp)
        os.replace(tmp, dest)
        fsutil.fsync_dir(dest.parent)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        save_checkpoint(dest, checkpoint)


def _state_to_cpu(model: torch.nn.Module) -> dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class _Best:
    """The best epoch so far. Patience counts epochs without higher accuracy; equal accuracy with a
    lower loss still makes a new best (small validation sets tie often)."""

    acc: float = -1.0
    loss: float = math.inf
    epoch: int = 0
    bad_epochs: int = 0
    state: dict[str, Any] | None = None
    confusion: list[list[int]] = field(default_factory=list)

    def update(self, val: EvalResult, epoch: int, model: torch.nn.Module) -> bool:
        self.bad_epochs = 0 if val.accuracy > self.acc else self.bad_epochs + 1
        improved = val.accuracy > self.acc or (val.accuracy == self.acc and val.loss < self.loss)
        if improved:
            self.acc, self.loss, self.epoch = val.accuracy, val.loss, epoch
            self.state = _state_to_cpu(model)
            self.confusion = val.confusion.tolist()
        return improved


class _Checkpoints:
    """``best.pt`` and ``last.pt`` of one run. A write may be deferred (kept in memory) and flushed later."""

    def __init__(self, directory: str | os.PathLike | None, save_last: bool) -> None:
        self.dir = Path(directory).expanduser() if directory is not None else None
        self.save_last = save_last
        self.pending: dict[str, dict[str, Any]] = {}
        self.seconds = 0.0
        if self.dir is not None:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrainingError(f"cannot create checkpoint directory {self.dir}: {exc}") from exc

    @property
    def best_path(self) -> Path | None:
        return self.dir / BEST_CHECKPOINT if self.dir is not None else None

    def add(self, checkpoint: dict[str, Any], improved: bool, *, defer: bool) -> None:
        if self.dir is None:
            return
        if improved:
            self.pending[BEST_CHECKPOINT] = checkpoint
        if self.save_last:
            self.pending[LAST_CHECKPOINT] = checkpoint
        if not defer:
            self.flush()

    def flush(self) -> None:
        if self.dir is None or not self.pending:
            return
        t0 = time.perf_counter()
        last, best = self.pending.get(LAST_CHECKPOINT), self.pending.get(BEST_CHECKPOINT)
        if last is not None:
            save_checkpoint(self.dir / LAST_CHECKPOINT, last)
        if best is not None and best is last:
            _link_or_save(self.dir / LAST_CHECKPOINT, self.dir / BEST_CHECKPOINT, best)
        elif best is not None:
            save_checkpoint(self.dir / BEST_CHECKPOINT, best)
        self.pending.clear()
        self.seconds += time.perf_counter() - t0


def _checkpoint_dict(
    run: _Run,
    model: torch.nn.Module,
    weights: WeightsInfo,
    best: _Best,
    history: Sequence[EpochStats],
    epoch: int,
    *,
    stop: bool,
    snapshot: bool,
) -> dict[str, Any]:
    """Everything needed to resume after ``epoch``. ``snapshot``: copy what later epochs change (the
    head and the optimiser; the frozen backbone is shared), for a checkpoint written later."""
    config = run.cfg
    state = model.state_dict()
    if snapshot:
        prefix = backbone_spec(config.backbone).head + "."
        state = {k: v.detach().clone() if k.startswith(prefix) else v for k, v in state.items()}
    scheduler = run.scheduler.state_dict() if run.scheduler is not None else None
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model": state,
        "optimizer": _copy_if(run.optimizer.state_dict(), snapshot),
        "scheduler": _copy_if(scheduler, snapshot) if scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": epoch,
        "stage": run.stage,
        "finetune_start": run.finetune_start,
        "config": config.to_dict(),
        "classes": list(run.data.classes),
        "backbone": config.backbone,
        "preprocess": config.preprocess.to_dict(),
        "best_val_acc": best.acc,
        "best_val_loss": best.loss,
        "best_epoch": best.epoch,
        "bad_epochs": best.bad_epochs,
        "best_confusion": best.confusion,
        "history": [h.to_dict() for h in history],
        "weights": weights.to_dict(),
        "dataset": run.data.summary.to_dict(),
        "status": "early_stopped" if stop else "completed",
    }


def _epoch(
    run: _Run, model: torch.nn.Module, epoch: int, best: _Best, resume_from: Mapping[str, Any] | None
) -> tuple[EpochStats, bool]:
    """Train and validate one epoch (setting up its stage first); returns its stats and whether to stop."""
    config = run.cfg
    stage = run.stage_of(epoch)
    if stage != run.stage:
        run.setup_stage(model, stage, resume_from)
    if run.cached(stage) and run.features is None:
        run.current_epoch = epoch - 1
        run.build_feature_cache(model)
    t0 = time.perf_counter()
    train_loss, train_acc, val = run.run_epoch(model, epoch, best.acc)
    elapsed = time.perf_counter() - t0
    lrs = {g.get("name", ""): g["lr"] for g in run.optimizer.param_groups}
    if run.scheduler is not None:
        run.scheduler.step()
    improved = best.update(val, epoch, model)
    stats = EpochStats(
        epoch,
        stage,
        train_loss,
        train_acc,
        val.loss,
        val.accuracy,
        lrs["head"],
        lrs.get("backbone"),
        elapsed,
        improved,
    )
    logger.info(
        "epoch %d/%d (%s): train loss %.4f acc %.3f, val loss %.4f acc %.3f%s (%.2f s)",
        epoch,
        config.epochs,
        stage,
        train_loss,
        train_acc,
        val.loss,
        val.accuracy,
        " *" if improved else "",
        elapsed,
    )
    stop = bool(config.early_stop_patience) and best.bad_epochs >= config.early_stop_patience
    if stop and stage == "head" and config.mode == "head-then-finetune":
        logger.info(
            "no better accuracy for %d epochs: the head stage ends, fine-tuning starts", best.bad_epochs
        )
        run.finetune_start, best.bad_epochs, stop = epoch + 1, 0, False
    return stats, stop


def train(
    dataset: str | os.PathLike | TrainData,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    cancel: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    save_last: bool = True,
    run_factory: Callable[..., _Run] | None = None,
) -> TrainResult:
    """Train a classifier on an ImageFolder directory (or already loaded :class:`TrainData`).

    ``checkpoint_dir`` receives ``best.pt`` (written atomically whenever validation accuracy
    improves; ties broken by lower validation loss) and, with ``save_last``, ``last.pt`` after
    every epoch; epochs on cached head features take milliseconds, so their checkpoints are
    written when the head stage (or the run) ends. ``early_stop_patience`` counts epochs without
    higher validation accuracy. ``resume`` continues from such a checkpoint (same classes and
    backbone; the given ``config`` is used): the next epoch is the checkpoint's epoch + 1 and, on
    the CPU, the run ends exactly as the uninterrupted run would have. Setting ``cancel`` stops
    between two batches and returns a result with ``status="cancelled"`` holding the best completed
    epoch (checkpoints of completed epochs only; a cancel while the dataset is read raises
    :class:`TrainingCancelledError`). ``on_progress`` receives :class:`ProgressEvent`\\ s; its
    exceptions are logged once and otherwise ignored. ``run_factory`` builds the per-run state
    (``_Run(data, config, cancel, on_progress)``); :mod:`dli_perception.core.distributed` passes
    a data-parallel one.

    Raises :class:`DatasetError` (bad dataset), :class:`WeightsNotFoundError`,
    :class:`ConfigError` and :class:`TrainingError` (unusable checkpoint, diverging loss).
    """
    import torch

    config = config or TrainConfig()
    t_start = time.perf_counter()
    cancel = cancel or threading.Event()
    checkpoints = _Checkpoints(checkpoint_dir, save_last)
    if on_progress is not None:
        with contextlib.suppress(Exception):
            on_progress(ProgressEvent("load", 0, config.epochs, message="reading the dataset"))
    data = dataset if isinstance(dataset, TrainData) else load_data(dataset, config, cancel=cancel)
    t_loaded = time.perf_counter()
    resume_from = load_training_checkpoint(resume) if resume is not None else None

    device = _resolve_device(config.device)
    with _deterministic(config.deterministic and device.type == "cpu"):
        run = (run_factory or _Run)(data, config, cancel, on_progress)
        run.timings["load_s"] = t_loaded - t_start
        torch.manual_seed(_mix(config.seed, 0))
        if resume_from is None:
            model, weights = build_model(
                config.backbone,
                num_classes=len(data.classes),
                weights=config.weights,
                download=config.download_weights,
            )
            history, best, epoch = [], _Best(), 1
        else:
            model, weights, history, best, epoch = _restore(resume_from, data, config, resume, run)
        model.to(run.device)
        status = "completed"
        try:
            while epoch <= config.epochs:
                stats, stop = _epoch(run, model, epoch, best, resume_from)
                resume_from = None  # optimiser state is restored only into the stage it was saved in
                history.append(stats)
                defer = run.cached(stats.stage)  # flushed when the stage ends
                ends_stage = stop or epoch == config.epochs or run.stage_of(epoch + 1) != stats.stage
                checkpoints.add(
                    _checkpoint_dict(run, model, weights, best, history, epoch, stop=stop, snapshot=defer),
                    stats.improved,
                    defer=defer and not ends_stage,
                )
                run.emit(
                    ProgressEvent(
                        "epoch",
                        epoch,
                        config.epochs,
                        loss=stats.train_loss,
                        accuracy=stats.train_acc,
                        eta_s=run.eta.estimate(run.remaining(epoch, "done", 0)),
                        stage=stats.stage,
                        val_loss=stats.val_loss,
                        val_accuracy=stats.val_acc,
                        best_val_accuracy=best.acc,
                        message="improved" if stats.improved else "",
                    )
                )
                if stop:
                    logger.info(
                        "early stop: no better validation accuracy for %d epochs (best %.3f at epoch %d)",
                        best.bad_epochs,
                        best.acc,
                        best.epoch,
                    )
                    status = "early_stopped"
                    break
                epoch += 1
        except TrainingCancelledError as exc:
            logger.info("%s; keeping the best epoch so far (%s)", exc, best.epoch or "none")
            status = "cancelled"
        finally:
            checkpoints.flush()  # deferred checkpoints are of completed epochs only
    return _finish(run, model, weights, history, best, status, checkpoints, t_start)


def _finish(
    run: _Run,
    model: torch.nn.Module,
    weights: WeightsInfo,
    history: list[EpochStats],
    best: _Best,
    status: str,
    checkpoints: _Checkpoints,
    t_start: float,
) -> TrainResult:
    """Best weights into the model (CPU, eval mode), timings, the result and the final event."""
    import torch

    if best.state is not None:
        model.load_state_dict(best.state)
    for p in model.parameters():
        p.requires_grad_(True)
    model.to("cpu").eval()
    run.features = None
    timings = run.timings
    if run.device.type == "cuda":
        timings["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated(run.device))
        torch.cuda.empty_cache()
    epoch_times: dict[str, list[float]] = {}
    for h in history:
        epoch_times.setdefault(h.stage, []).append(h.time_s)
    timings["epoch_s"] = epoch_times
    timings["epoch_mean_s"] = {k: float(np.mean(v)) for k, v in epoch_times.items()}
    timings["checkpoint_s"] = checkpoints.seconds
    timings["total_s"] = time.perf_counter() - t_start
    best_path = checkpoints.best_path
    classes = list(run.data.classes)
    result = TrainResult(
        model=model,
        classes=classes,
        config=run.cfg,
        weights=weights,
        history=history,
        best_epoch=best.epoch,
        best_val_acc=max(best.acc, 0.0),
        best_val_loss=best.loss if math.isfinite(best.loss) else None,
        confusion=best.confusion,
        per_class=per_class_metrics(best.confusion, classes) if best.confusion else {},
        timings=timings,
        status=status,
        dataset=run.data.summary,
        checkpoint_path=str(best_path) if best_path is not None and best_path.is_file() else None,
    )
    last_epoch = history[-1].epoch if history else 0
    run.emit(
        ProgressEvent(
            "done",
            last_epoch,
            run.cfg.epochs,
            eta_s=0.0,
            best_val_accuracy=result.best_val_acc,
            message=status,
        )
    )
    return result


def _restore(
    ckpt: Mapping[str, Any], data: TrainData, config: TrainConfig, resume: Any, run: _Run
) -> tuple[torch.nn.Module, WeightsInfo, list[EpochStats], _Best, int]:
    """Model, history, best-epoch state and next epoch from a training checkpoint, checked against the run."""
    if list(ckpt["classes"]) != list(data.classes):
        raise TrainingError(
            f"checkpoint {resume} was trained on classes {ckpt['classes']} but the dataset has "
            f"{data.classes}; resume needs the same classes (start a new run instead)"
        )
    if ckpt["backbone"] != config.backbone:
        raise TrainingError(
            f"checkpoint {resume} is a {ckpt['backbone']} but the config asks for {config.backbone}"
        )
    if ckpt["dataset"].get("sha256") != data.summary.sha256:
        logger.warning("the dataset changed since checkpoint %s was written; resuming anyway", resume)
    old = ckpt["config"]
    changed = sorted(k for k, v in config.to_dict().items() if k in old and old[k] != v)
    if changed:
        logger.warning(
            "resuming %s with changed options %s: results differ from an uninterrupted run", resume, changed
        )
    model, _ = build_model(config.backbone, num_classes=len(data.classes), weights="none")
    model.load_state_dict(ckpt["model"])
    run.finetune_start = int(ckpt["finetune_start"])
    best = _Best(
        acc=float(ckpt["best_val_acc"]),
        loss=float(ckpt["best_val_loss"]),
        epoch=int(ckpt["best_epoch"]),
        bad_epochs=int(ckpt["bad_epochs"]),
        confusion=ckpt["best_confusion"],
    )
    if best.epoch == ckpt["epoch"]:
        best.state = {k: v.clone() for k, v in ckpt["model"].items()}
    elif best.epoch:
        with contextlib.suppress(TrainingError):
            beside = load_training_checkpoint(Path(resume).parent / BEST_CHECKPOINT)
            if beside["epoch"] == best.epoch:
                best.state = beside["model"]
        if best.state is None:
            logger.warning(
                "best weights (epoch %d) not found beside %s; the result keeps the last weights unless a "
                "later epoch improves",
                best.epoch,
                resume,
            )
    logger.info("resuming from %s after epoch %d", resume, ckpt["epoch"])
    history = [EpochStats(**h) for h in ckpt["history"]]
    return model, WeightsInfo(**ckpt["weights"]), history, best, int(ckpt["epoch"]) + 1
