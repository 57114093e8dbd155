"""Where the package's shared files live, and the Fast DDS transport profile every process uses.

Fast DDS's default transports deliver large best-effort frames badly between
processes (measured with the Kilted wheels: 640x480 rgb8 at 30 Hz, 1 frame of
180 arrived; 1280x720, none). ``config/fastdds_shm.xml`` replaces them with a
shared-memory transport with a 32 MiB segment plus UDPv4 with large socket
buffers. :func:`apply_default_profile` points Fast DDS at it before rclpy
starts, unless the user already chose a profile (their choice wins) or set
``DLI_PERCEPTION_FASTDDS_PROFILE=0``.

Fast DDS 3 (ROS 2 Kilted and newer) reads ``FASTDDS_DEFAULT_PROFILES_FILE``;
Fast DDS 2 (Humble, Jazzy) reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``
(measured with the Jazzy wheels: with only the first set, 57 % of 640x480 and
33 % of 1280x720 frames arrived at 30 Hz; with both set, at least 95 %). With
Fast DDS 3 only the first is set (Fast DDS 3 warns about the second at every
start); with Fast DDS 2, or when the version cannot be told, both are set.

:func:`keep_frame_buffers` is the other half of moving frames fast in Python: every frame taken
or published allocates a few buffers of its size (the C message, the bytes, the array), and with
glibc's default thresholds each is a fresh ``mmap`` whose pages fault in one by one and are
unmapped again when freed (~2,700 page faults per 1280x720 rgb8 frame taken). Measured with
1280x720 rgb8 at 30 Hz between two processes (``benchmarks/transport.py --heap-rounds``, load
average ~10): the subscriber's CPU per frame fell from 5.1-5.2 ms to 3.6-4.0 ms; one take
(``benchmarks/take.py``, quiet) from 6.2-6.8 ms to 1.55-1.8 ms.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys
from pathlib import Path

PACKAGE = "dli_perception"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
"""Read by Fast DDS 3 (ROS 2 Kilted and newer)."""
LEGACY_PROFILE_ENV = "FASTRTPS_DEFAULT_PROFILES_FILE"
"""Read by Fast DDS 2 (ROS 2 Humble and Jazzy) instead of :data:`PROFILE_ENV`."""
PROFILE_ENVS = (PROFILE_ENV, LEGACY_PROFILE_ENV)
OPT_OUT_ENV = "DLI_PERCEPTION_FASTDDS_PROFILE"
PROFILE_FILE = "fastdds_shm.xml"


def share_dir() -> Path:
    """The package's share directory: ament index (colcon install), source tree, or the venv prefix."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, LookupError, OSError, ValueError):
            pass  # not installed through colcon, or no AMENT_PREFIX_PATH at all
    except ImportError:
        pass
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "config").is_dir() and (source_root / "package.xml").is_file():
        return source_root
    return Path(sys.prefix) / "share" / PACKAGE


def config_dir() -> Path:
    """Directory holding the shipped YAML parameter files and the Fast DDS profile."""
    return share_dir() / "config"


def default_profile_path() -> Path:
    """Path of the shipped Fast DDS profile."""
    return config_dir() / PROFILE_FILE


FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


def fastdds_major(env: dict | None = None) -> int | None:
    """Major version of the Fast DDS this process will use: 2, 3, or None when it cannot be told.

    ``ROS_DISTRO`` (set by a sourced ROS installation) decides first; off-robot the installed
    PyPI wheels do (``ros-fastdds`` is Fast DDS 3, ``ros-fastrtps`` Fast DDS 2).
    """
    env = os.environ if env is None else env
    distro = env.get("ROS_DISTRO", "").strip().lower()
    if distro:
        return 2 if distro in FAST_DDS_2_DISTROS else 3
    for dist, major in (("ros-fastdds", 3), ("ros-fastrtps", 2)):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return major
    return None


def apply_default_profile(env: dict | None = None) -> str | None:
    """Point both Fast DDS profile variables at the shipped profile unless a profile was chosen or opted out.

    A profile the user set in either variable wins and is copied into the other one when that is
    unset, so it applies with Fast DDS 2 and 3 alike. Must run before the first rclpy context is
    initialised in this process. Returns the profile path in effect (None when none is).
    """
    env = os.environ if env is None else env
    chosen = next((env[name] for name in PROFILE_ENVS if env.get(name)), None)
    if env.get(OPT_OUT_ENV, "1") == "0":
        return chosen
    if chosen is None:
        path = default_profile_path()
        if not path.is_file():
            return None
        chosen = str(path)
    names = (PROFILE_ENV,) if fastdds_major(env) == 3 else PROFILE_ENVS
    for name in names:
        if not env.get(name):
            env[name] = chosen
    return chosen


ALLOCATOR_OPT_OUT_ENV = "DLI_PERCEPTION_MALLOC_TUNING"
"""``0`` leaves glibc's allocator thresholds as they are (see :func:`keep_frame_buffers`)."""
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Allocations below this come from the heap (glibc's largest dynamic threshold): a 4K rgb8 frame is 25 MB."""
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
"""Free memory the heap keeps instead of returning it to the system: a few frames of every size in flight."""
_MALLOC_ENVS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_frame_buffers(env: dict | None = None) -> bool:
    """Make glibc reuse frame-sized buffers from its heap instead of mapping and unmapping each one.

    Sets ``M_MMAP_THRESHOLD`` (32 MiB) and ``M_TRIM_THRESHOLD`` (128 MiB) with ``mallopt``: the
    process then keeps up to 128 MiB of freed memory for the next frames. Does nothing (returns
    False) with ``DLI_PERCEPTION_MALLOC_TUNING=0``, when the user set glibc's own malloc variables or
    tunables, and where there is no glibc ``mallopt`` (macOS, musl); True when both were set.
    """
    env = os.environ if env is None else env
    if env.get(ALLOCATOR_OPT_OUT_ENV, "1") == "0":
        return False
    if any(env.get(name) for name in _MALLOC_ENVS) or "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return False  # the user's choice wins
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
