"""Which files are images: the one list of image file extensions the package reads.

Datasets, training, calibration, the folder camera source and the CLI all decide with it, so a file
one of them accepts is never ignored by another. Matching is case-insensitive.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""Lower-case suffixes (with the dot) of the image files the package reads."""


def is_image_name(name: str | Path) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS
