"""Calibration images for INT8 (TensorRT engines and ONNX Runtime quantisation).

Images come from an ImageFolder dataset (usually the one the model was trained on),
round-robin across classes, and go through the one shared preprocessing, so the
ranges INT8 is calibrated on are exactly the ranges inference sees.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from dli_perception.core.fsutil import sha256_file
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS
from dli_perception.core.preprocess import PreprocessConfig, preprocess_batch
from dli_perception.errors import ConfigError

log = logging.getLogger(__name__)


def calibration_images(dataset_dir: str | os.PathLike, max_images: int = 256) -> list[Path]:
    """Up to ``max_images`` images from an ImageFolder dataset, taken round-robin across classes.

    Deterministic (sorted names). Raises :class:`ConfigError` when the directory has no images.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise ConfigError(f"calibration dataset {root} does not exist; point calibration_dir at a dataset")
    if max_images < 1:
        raise ConfigError(f"calibration_images must be >= 1, got {max_images}")
    per_class = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if files:
            per_class.append(files)
    chosen: list[Path] = []
    depth = 0
    while len(chosen) < max_images and any(depth < len(files) for files in per_class):
        for files in per_class:
            if depth < len(files) and len(chosen) < max_images:
                chosen.append(files[depth])
        depth += 1
    if not chosen:
        raise ConfigError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}/<class>/; cannot calibrate INT8")
    return chosen


def calibration_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over the calibration images' names and contents (part of the INT8 engine key)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(f"{path.parent.name}/{path.name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def calibration_batches(paths: Sequence[Path], cfg: PreprocessConfig, batch_size: int) -> Iterator[np.ndarray]:
    """Float32 ``(batch_size, 3, S, S)`` batches of the images, preprocessed exactly like inference.

    Unreadable images are skipped with a warning; a last partial batch is dropped
    (TensorRT calibrates with a fixed batch size).
    """
    import cv2

    if batch_size < 1:
        raise ConfigError(f"calibration batch size must be >= 1, got {batch_size}")
    pending: list[np.ndarray] = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            log.warning("skipping unreadable calibration image %s", path)
            continue
        pending.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if len(pending) == batch_size:
            yield preprocess_batch(pending, cfg)
            pending = []
    if pending:
        log.info("dropping %d calibration images that do not fill a batch of %d", len(pending), batch_size)
