"""Compressed image formats OpenCV encodes, what each can hold, and the size a header declares.

cv_bridge accepts any format OpenCV can write (``jpg``, ``jpeg``, ``jpe``, ``png``, ``bmp``,
``dib``, ``ras``, ``sr``, ``tif``, ``tiff``). Each has a :class:`Codec` naming its canonical
``format`` string, the file extension OpenCV picks the encoder by, and the layouts it stores
without silently changing them (OpenCV would quietly turn a 16-bit image into 8 bits for BMP).

:func:`declared_size` reads the width and height from the header of PNG, JPEG, BMP, Sun raster
and TIFF data, so a decoder is never asked to allocate what a corrupt or hostile header claims.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

__all__ = ["CODECS", "MAX_DECODED_PIXELS", "Codec", "declared_size", "is_gray_sun_raster"]

MAX_DECODED_PIXELS = 1 << 26
"""Most pixels (width x height) a compressed image may declare: 67 MP, twice 8K UHD. Larger ones are refused
before decoding, because decoders allocate (and for truncated JPEGs fill) what the header declares: a
600-byte JPEG declaring 30000x30000 would take 2.7 GB and half a minute."""


@dataclass(frozen=True)
class Codec:
    """One compressed format: its ``format`` string, OpenCV extension and storable generic layouts."""

    name: str
    extension: str
    layouts: frozenset[str]
    lossy: bool = False


def _layouts(depths: tuple[str, ...], channels: tuple[int, ...]) -> frozenset[str]:
    return frozenset(f"{d}C{c}" for d in depths for c in channels)


_JPEG = Codec("jpeg", ".jpg", _layouts(("8U",), (1, 3)), lossy=True)
_PNG = Codec("png", ".png", _layouts(("8U", "16U"), (1, 3, 4)))
_BMP = Codec("bmp", ".bmp", _layouts(("8U",), (1, 3, 4)))
_RAS = Codec("ras", ".ras", _layouts(("8U",), (1, 3)))
_TIFF = Codec("tiff", ".tiff", _layouts(("8U", "8S", "16U", "16S", "32S", "32F", "64F"), (1, 3, 4)))

CODECS: Mapping[str, Codec] = MappingProxyType(
    {
        "jpg": _JPEG,
        "jpeg": _JPEG,
        "jpe": _JPEG,
        "png": _PNG,
        "bmp": _BMP,
        "dib": _BMP,
        "ras": _RAS,
        "sr": _RAS,
        "tif": _TIFF,
        "tiff": _TIFF,
    }
)
"""``dst_format`` spellings (lower case, no dot) -> :class:`Codec`."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SUN_RASTER_MAGIC = b"\x59\xa6\x6a\x95"
# JPEG start-of-frame markers (SOF0-SOF15 except DHT, JPG and DAC), which carry the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


def _jpeg_size(mv: memoryview) -> tuple[int, int] | None:
    n = len(mv)
    i = 2
    while i + 4 <= n:
        if mv[i] != 0xFF:
            return None
        marker = mv[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            i += 2
            continue
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", mv[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # image data before any frame header
            return None
        i += 2 + ((mv[i + 2] << 8) | mv[i + 3])
    return None


def _tiff_size(mv: memoryview) -> tuple[int, int] | None:
    """Width and length of the first TIFF directory (classic TIFF, either byte order)."""
    order = {b"II": "<", b"MM": ">"}[bytes(mv[:2])]
    n = len(mv)
    (ifd,) = struct.unpack(order + "I", mv[4:8])
    if ifd + 2 > n:
        return None
    (entries,) = struct.unpack(order + "H", mv[ifd : ifd + 2])
    found: dict[int, int] = {}
    for k in range(entries):
        at = ifd + 2 + 12 * k
        if at + 12 > n:
            break
        tag, kind, _count = struct.unpack(order + "HHI", mv[at : at + 8])
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH) and kind in (_TIFF_SHORT, _TIFF_LONG):
            fmt = "H" if kind == _TIFF_SHORT else "I"
            (found[tag],) = struct.unpack(order + fmt, mv[at + 8 : at + 8 + struct.calcsize(fmt)])
    if _TIFF_WIDTH in found and _TIFF_LENGTH in found:
        return found[_TIFF_WIDTH], found[_TIFF_LENGTH]
    return None


def declared_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) a PNG, JPEG, BMP, Sun raster or TIFF header declares; None if unknown or absent."""
    mv = memoryview(buf)
    head = bytes(mv[:8])
    n = len(mv)
    if head == _PNG_SIGNATURE and n >= 24:
        width, height = struct.unpack(">II", mv[16:24])
        return width, height
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(mv)
    if head[:2] == b"BM" and n >= 26:
        width, height = struct.unpack("<ii", mv[18:26])
        return abs(width), abs(height)  # a negative height means rows stored top-down
    if head[:4] == _SUN_RASTER_MAGIC and n >= 12:
        width, height = struct.unpack(">II", mv[4:12])
        return width, height
    if head[:4] in (b"II*\x00", b"MM\x00*") and n >= 8:
        return _tiff_size(mv)
    return None


def is_gray_sun_raster(buf: np.ndarray) -> bool:
    """True for an 8-bit Sun raster without a colour map, which OpenCV reads back as zeros unless
    it is decoded as colour (its three channels are then equal)."""
    mv = memoryview(buf)
    if len(mv) < 32 or bytes(mv[:4]) != _SUN_RASTER_MAGIC:
        return False
    depth, _length, _kind, map_type, map_length = struct.unpack(">IIIII", mv[12:32])
    return depth == 8 and (map_type == 0 or map_length == 0)
