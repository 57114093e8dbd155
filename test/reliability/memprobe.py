"""Memory probes and hostile compressed images, importable without ROS or hypothesis (child processes use it).

:func:`png_bytes` and :func:`jpeg_bytes` build tiny files whose headers declare huge images;
:func:`measure_peak_growth_kb` reports how far a call pushed the process's peak RSS (VmHWM,
reset through ``/proc/self/clear_refs``), which counts native (OpenCV) allocations that
tracemalloc cannot see.
"""

from __future__ import annotations

import resource
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def png_bytes(width: int, height: int, payload: bytes = b"", colour_type: int = 2, bit_depth: int = 8) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height``; its IDAT holds ``payload`` (usually too little)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


def jpeg_bytes(width: int, height: int, quality: int = 90) -> bytes:
    """A small valid JPEG (8x8) whose SOF header is rewritten to declare ``width`` x ``height``.

    Decoders that trust the header allocate (and fill) ``width * height * 3`` bytes for it.
    """
    import cv2

    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    data = bytearray(buf.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size (VmRSS) of a process, kB."""
    return _status_kb(pid, "VmRSS")


def peak_rss_kb(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a process, kB."""
    return _status_kb(pid, "VmHWM")


def _status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def limit_address_space(extra_bytes: int) -> None:
    """Cap this process's virtual memory at its current size plus ``extra_bytes`` (RLIMIT_AS).

    A safety net for child processes that decode hostile data: a regression fails with an
    allocation error instead of taking the machine's memory.
    """
    vm_kb = _status_kb("self", "VmSize")
    limit = vm_kb * 1024 + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def measure_peak_growth_kb(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn`` and return (its result or the exception it raised, peak RSS growth in kB)."""
    if not reset_peak_rss():
        raise OSError("cannot reset VmHWM through /proc/self/clear_refs")
    before = rss_kb()
    try:
        result: Any = fn()
    except Exception as exc:  # the caller inspects it
        result = exc
    return result, peak_rss_kb() - before
