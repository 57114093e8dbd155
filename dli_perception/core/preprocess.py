"""The one definition of model input, shared by training, export, every backend and the overlay.

An image enters as an ``HxWx3`` uint8 array in RGB order (what
:func:`dli_perception.core.imaging.imgmsg_to_cv2` gives with
``desired_encoding="rgb8"``) and leaves as a float32 ``3xSxS`` array (or a
``Nx3xSxS`` batch), normalised with the ImageNet mean and standard deviation
the pretrained backbones were trained with.

The parameters live in :class:`PreprocessConfig`, which is written into every
model's ``metadata.json`` so the classifier prepares frames exactly as the
trainer did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dli_perception.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("squash", "shorter_side_crop")
INTERPOLATIONS = ("bilinear", "nearest", "area", "bicubic")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a frame becomes model input.

    ``resize_mode="squash"`` scales the whole frame to ``size`` x ``size`` (the
    DLI notebooks' ``Resize((224, 224))``: the robot keeps its full field of
    view); ``"shorter_side_crop"`` scales the shorter side to ``resize_size``
    and takes the centre ``size`` x ``size`` crop (torchvision's evaluation preset).
    """

    size: int = 224
    resize_size: int = 256
    resize_mode: str = "squash"
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color_order: str = "rgb"
    layout: str = "nchw"
    dtype: str = "float32"
    version: int = field(default=1)

    def __post_init__(self) -> None:
        if not 8 <= int(self.size) <= 4096:
            raise ConfigError(f"preprocess size must be in [8, 4096], got {self.size}")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.resize_mode == "shorter_side_crop" and self.resize_size < self.size:
            raise ConfigError(f"resize_size ({self.resize_size}) must be >= size ({self.size}) for shorter_side_crop")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("mean and std must have three values (R, G, B)")
        if any(float(s) <= 0 for s in self.std):
            raise ConfigError(f"std values must be > 0, got {self.std}")
        if self.color_order != "rgb" or self.layout != "nchw" or self.dtype != "float32":
            raise ConfigError("only color_order='rgb', layout='nchw', dtype='float32' are supported")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed image: (3, size, size)."""
        return (3, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``metadata.json``."""
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`; unknown keys are refused with a clear error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown preprocessing keys {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def for_size(cls, size: int, **kwargs: Any) -> "PreprocessConfig":
        """The config for input ``size`` with ``resize_size`` kept at torchvision's 256/224 ratio (never < size)."""
        size = int(size)
        return cls(size=size, resize_size=max(size, round(size * 256 / 224)), **kwargs)


def _cv2():
    import cv2  # deferred: importing cv2 costs ~100 ms and nodes import this module at start

    return cv2


_CV2_INTERP = {"bilinear": "INTER_LINEAR", "nearest": "INTER_NEAREST", "area": "INTER_AREA", "bicubic": "INTER_CUBIC"}


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ConfigError(f"preprocess expects an HxWx3 RGB array, got shape {shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ConfigError(f"preprocess got an empty image of shape {image.shape}")
    if image.dtype != np.uint8:
        raise ConfigError(f"preprocess expects uint8 pixels, got {image.dtype}; convert with rgb8 first")
    return image


def resize(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Geometric part of preprocessing: HxWx3 uint8 -> size x size x 3 uint8."""
    cv2 = _cv2()
    image = _check_rgb(image)
    interp = getattr(cv2, _CV2_INTERP[cfg.interpolation])
    h, w = image.shape[:2]
    if cfg.resize_mode == "squash":
        if (h, w) == (cfg.size, cfg.size):
            return image
        return cv2.resize(image, (cfg.size, cfg.size), interpolation=interp)
    scale = cfg.resize_size / min(h, w)
    nh, nw = max(cfg.size, round(h * scale)), max(cfg.size, round(w * scale))
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=interp)
    top, left = (nh - cfg.size) // 2, (nw - cfg.size) // 2
    return resized[top : top + cfg.size, left : left + cfg.size]


def view_rect(h: int, w: int, cfg: PreprocessConfig) -> tuple[float, float, float, float]:
    """The region (x, y, width, height in pixels) of an HxW image that :func:`resize` turns into the input."""
    if cfg.resize_mode == "squash":
        return 0.0, 0.0, float(w), float(h)
    side = min(h, w) * cfg.size / cfg.resize_size
    return (w - side) / 2, (h - side) / 2, side, side


def train_view(
    image: np.ndarray,
    cfg: PreprocessConfig,
    rng: np.random.Generator,
    *,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    color_jitter: float = 0.0,
    hflip: bool = False,
) -> np.ndarray:
    """Training counterpart of :func:`resize`: HxWx3 uint8 RGB -> size x size x 3 uint8, ready for ``normalize``.

    A random crop of the evaluation view (:func:`view_rect`) with area fraction in ``crop_scale`` and aspect
    ratio in ``crop_ratio`` (the whole view when ten draws do not fit), resized to ``size``; then brightness,
    contrast and saturation each scaled by a factor in ``[1 - color_jitter, 1 + color_jitter]`` and, with
    ``hflip``, a horizontal flip half of the time. Every random choice comes from ``rng``.
    """
    cv2 = _cv2()
    image = _check_rgb(image)
    h, w = image.shape[:2]
    vx, vy, vw, vh = view_rect(h, w, cfg)
    fx, fy, fw, fh = 0.0, 0.0, 1.0, 1.0  # crop in view coordinates (fractions)
    log_lo, log_hi = math.log(crop_ratio[0]), math.log(crop_ratio[1])
    for _ in range(10):
        area = rng.uniform(*crop_scale)
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if cw <= 1.0 and ch <= 1.0:
            fx, fy, fw, fh = rng.uniform(0, 1 - cw), rng.uniform(0, 1 - ch), cw, ch
            break
    x0 = round(vx + fx * vw)
    y0 = round(vy + fy * vh)
    x1 = max(x0 + 1, min(w, round(vx + (fx + fw) * vw)))
    y1 = max(y0 + 1, min(h, round(vy + (fy + fh) * vh)))
    interp = getattr(cv2, _CV2_INTERP[cfg.interpolation])
    out = cv2.resize(image[y0:y1, x0:x1], (cfg.size, cfg.size), interpolation=interp)
    s = color_jitter
    if s > 0:
        luma = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        pix = out.astype(np.float32)
        pix *= rng.uniform(1 - s, 1 + s)  # brightness
        grey = pix @ luma
        pix = (pix - grey.mean()) * rng.uniform(1 - s, 1 + s) + grey.mean()  # contrast
        grey = (pix @ luma)[..., None]
        pix = grey + (pix - grey) * rng.uniform(1 - s, 1 + s)  # saturation
        out = np.clip(np.rint(pix), 0, 255).astype(np.uint8)
    if hflip and rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
    return out


def normalize(image: np.ndarray, cfg: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """Photometric part: size x size x 3 uint8 RGB -> 3 x size x size float32, mean/std normalised.

    ``out`` may be a preallocated ``(3, size, size)`` float32 array (a slot of a batch).
    """
    image = _check_rgb(image)
    scale = np.asarray([1.0 / (255.0 * s) for s in cfg.std], dtype=np.float32)
    offset = np.asarray([m / s for m, s in zip(cfg.mean, cfg.std, strict=True)], dtype=np.float32)
    chw = image.transpose(2, 0, 1)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, scale[:, None, None], out=out, casting="unsafe")
    out -= offset[:, None, None]
    return out


def preprocess(image: np.ndarray, cfg: PreprocessConfig, out: np.ndarray | None = None) -> np.ndarray:
    """Full preprocessing of one RGB uint8 frame -> float32 (3, size, size)."""
    return normalize(resize(image, cfg), cfg, out=out)


def preprocess_batch(images: Iterable[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """Preprocess several frames into one contiguous float32 (N, 3, size, size) batch."""
    images = list(images)
    batch = np.empty((len(images), *cfg.input_shape), dtype=np.float32)
    for i, image in enumerate(images):
        preprocess(image, cfg, out=batch[i])
    return batch


def denormalize(chw: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Inverse of :func:`normalize` (for overlays and debugging): float32 CHW -> uint8 HWC RGB."""
    mean = np.asarray(cfg.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(cfg.std, dtype=np.float32)[:, None, None]
    rgb = (chw * std + mean) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0)
