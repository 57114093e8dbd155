"""Backbones and their initial weights: build a torchvision model with an N-class head, load ImageNet or file weights.

Weight loading says where the weights came from (:class:`WeightsInfo`) and logs when the head was adapted
(ImageNet's 1000 outputs become N: expected, not a warning). No download happens unless asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dli_perception.core import fsutil
from dli_perception.errors import ConfigError, TrainingError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


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
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
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
    missing = [k for k in missing if not (adapted and k in head_keys) and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise TrainingError(
            f"weights from {origin} do not fit backbone {backbone!r}: missing {missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}; pass weights saved from a {backbone} model "
            "or choose the matching backbone"
        )
    if adapted:
        logger.info("%s adapted %s -> %d", spec.head, head_from if head_from is not None else "none", num_classes)
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
        raise TrainingError(f"torchvision's {backbone} has no Linear({spec.feature_dim}, ...) at {spec.head!r}")
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
    info = WeightsInfo(source="file", backbone=backbone, path=str(path.resolve()), sha256=fsutil.sha256_file(path))
    info.head_adapted, info.head_from = _apply_weights(model, backbone, state, num_classes, str(path))
    logger.info("%s weights loaded from %s", backbone, path)
    return model, info
