"""Disk errors in words and durable writes: what the store's write and repair paths share."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from dli_perception.core import fsutil


def os_message(err: OSError) -> str:
    """What an ``OSError`` means for the user, in words that say what to do."""
    if err.errno == errno.ENOSPC:
        return "the disk is full; free some space"
    if err.errno == errno.EDQUOT:
        return "the disk quota is exhausted; free some space"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the directory is read-only; make it writable or choose another dataset directory"
    if err.errno == errno.EFBIG:
        return "the file is larger than this process may write (file size limit)"
    return f"{err.strerror or err}"


@functools.lru_cache(maxsize=1)
def _syncfs() -> Callable[[int], int] | None:
    """libc ``syncfs`` (Linux) or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_files(root: Path, files: list[Path]) -> None:
    """Make ``files`` (and their directory entries) durable.

    One ``syncfs`` of ROOT's filesystem where available: a single journal commit instead of one
    per file (0.1 ms instead of 1-5 ms per image on ext4). Elsewhere the files are fsync'ed in
    parallel, which lets the filesystem group the commits.
    """
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.ENOSYS, errno.EINVAL):
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(_fsync_path, files))
    for directory in {p.parent for p in files}:
        fsutil.fsync_dir(directory)
