"""The dataset directory itself: opening ROOT, the writer lock, and class directories kept inside ROOT."""

from __future__ import annotations

import os
from pathlib import Path

from dli_perception.core.dataset.disk import os_message
from dli_perception.core.dataset.layout import LOCK_NAME
from dli_perception.errors import DatasetError, InvalidLabelError


def open_root(root: str | os.PathLike, readonly: bool) -> Path:
    """ROOT resolved (created first unless ``readonly``); :class:`DatasetError` when it is no directory."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"dataset path {root} is not a directory; choose a directory")
    try:
        if not readonly:
            root.mkdir(parents=True, exist_ok=True)
        resolved = root.resolve(strict=True)
    except FileNotFoundError:
        raise DatasetError(f"dataset directory {root} does not exist") from None
    except OSError as err:
        raise DatasetError(f"cannot create dataset directory {root}: {os_message(err)}") from None
    if not resolved.is_dir():
        raise DatasetError(f"dataset path {root} is not a directory; choose a directory")
    return resolved


def take_writer_lock(root: Path) -> tuple[int | None, str]:
    """Flock ROOT's lock file: ``(fd, "")``, or ``(None, why)`` when the lock file cannot be created
    (the store then opens read-only). :class:`DatasetError` when another writer holds the lock."""
    import fcntl

    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        return None, os_message(err)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DatasetError(
            f"dataset {root} is already open for writing by another process or store; "
            "close that one first (stop the recorder) or open this one with readonly=True"
        ) from None
    return fd, ""


def make_class_dir(root: Path, label: str) -> Path:
    """The directory of a (validated) class, created if needed and checked to lie inside ROOT."""
    path = root / label
    if path.is_symlink():
        raise DatasetError(f"class directory {path} is a symbolic link; the store never follows links")
    if path.resolve().parent != root:
        raise InvalidLabelError(f"class name {label!r} would write outside the dataset {root}")
    try:
        path.mkdir(exist_ok=True)
    except OSError as err:
        raise DatasetError(f"cannot create class directory {path}: {os_message(err)}; nothing was written") from None
    if not path.is_dir() or path.is_symlink():
        raise DatasetError(f"{path} exists and is not a directory; remove it or rename the class")
    return path
