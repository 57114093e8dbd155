"""Which files are images and how they are read: the one list of image file extensions the package reads,
and decoding of image files to RGB arrays.

Datasets, training, calibration, the folder camera source and the CLI all decide with it, so a file
one of them accepts is never ignored by another. Matching is case-insensitive.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dli_perception.errors import DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""Lower-case suffixes (with the dot) of the image files the package reads."""


def is_image_name(name: str | Path) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Decode image file bytes to HxWx3 uint8 RGB (grey and alpha images converted); None if undecodable."""
    import cv2  # deferred: costs ~100 ms at import

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
        raise DatasetError(f"cannot read image {path}: {exc}; was the dataset changed during training?") from exc
    image = decode_rgb(data)
    if image is None:
        raise DatasetError(f"{path} is not a decodable image; remove or replace it")
    return image
