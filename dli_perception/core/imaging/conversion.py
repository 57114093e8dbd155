"""Converting pixels between encodings by cv_bridge's rules, with the real cv_bridge when it is importable.

Colour encodings convert among themselves through ``cv2.cvtColor`` (yuv422 and bayer only to
mono/rgb/bgr, plus rgba/bgra for yuv), 8 <-> 16 bit depth changes are scaled (x257 and /257) and
generic OpenCV types only change depth, never colour. When cv_bridge is importable its C++
converter (``cvtColor2``) does the colour conversions, unless ``DLI_PERCEPTION_FORCE_BUILTIN_BRIDGE=1``
or ``dli_perception.core.imaging.force_builtin_bridge`` selects the built-in table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from dli_perception.core.imaging.encoding_table import _PASSTHROUGH_NAMES, ENCODINGS, EncodingInfo, encoding_info
from dli_perception.errors import ImageConversionError

logger = logging.getLogger(__name__)

FORCE_BUILTIN_ENV = "DLI_PERCEPTION_FORCE_BUILTIN_BRIDGE"

# Names older cv_bridge releases may not know, given to its converter in their canonical spelling.
_CV_BRIDGE_SPELLING: Mapping[str, str] = MappingProxyType({"uyvy": "yuv422", "yuyv": "yuv422_yuy2"})

# Colour conversions: (source family, target family) -> cv2.COLOR_* names applied in turn.
# _DEPTH marks a bit-depth change (cv_bridge's SAME_FORMAT step).
_DEPTH = "depth"
_PLAIN_CV_NAMES = {"gray": "GRAY", "rgb": "RGB", "bgr": "BGR", "rgba": "RGBA", "bgra": "BGRA"}
_YUV_CV_SUFFIXES = {"uyvy": "UYVY", "yuyv": "YUY2"}
# OpenCV names Bayer patterns by the 2x2 block starting at pixel (1, 1): ROS rggb is OpenCV BayerBG.
_BAYER_CV_NAMES = {
    "bayer_rggb": "BayerBG",
    "bayer_bggr": "BayerRG",
    "bayer_gbrg": "BayerGR",
    "bayer_grbg": "BayerGB",
}
_BAYER_TARGETS = ("gray", "rgb", "bgr")


def _build_conversions() -> dict[tuple[str, str], tuple[str, ...]]:
    families = [*_PLAIN_CV_NAMES, *_YUV_CV_SUFFIXES, *_BAYER_CV_NAMES]
    table: dict[tuple[str, str], tuple[str, ...]] = {(f, f): (_DEPTH,) for f in families}
    for src, src_cv in _PLAIN_CV_NAMES.items():
        for dst, dst_cv in _PLAIN_CV_NAMES.items():
            if src != dst:
                table[(src, dst)] = (f"COLOR_{src_cv}2{dst_cv}",)
    for src, suffix in _YUV_CV_SUFFIXES.items():
        for dst, dst_cv in _PLAIN_CV_NAMES.items():
            table[(src, dst)] = (f"COLOR_YUV2{dst_cv}_{suffix}",)
    for src, bayer_cv in _BAYER_CV_NAMES.items():
        for dst in _BAYER_TARGETS:
            table[(src, dst)] = (f"COLOR_{bayer_cv}2{_PLAIN_CV_NAMES[dst]}",)
    return table


_CONVERSIONS: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType(_build_conversions())

# Scale factors cv_bridge applies when only the bit depth changes between 8 and 16 bits.
_DEPTH_SCALES: Mapping[tuple[int, int], float] = MappingProxyType({(8, 16): 65535.0 / 255.0, (16, 8): 255.0 / 65535.0})


# --------------------------------------------------------------------------- backend selection

_UNSET = object()
_real_cvtcolor_cache: Any = _UNSET


def _builtin_forced() -> bool:
    """Whether the environment or ``dli_perception.core.imaging.force_builtin_bridge`` rules out cv_bridge."""
    from dli_perception.core import imaging  # the public switch lives on the package

    if imaging.force_builtin_bridge:
        return True
    return os.environ.get(FORCE_BUILTIN_ENV, "").strip().lower() in ("1", "true", "yes")


def _real_cvtcolor() -> Any:
    """cv_bridge's ``cvtColor2`` when cv_bridge is importable and not disabled, else None."""
    global _real_cvtcolor_cache
    if _builtin_forced():
        return None
    if _real_cvtcolor_cache is _UNSET:
        try:
            from cv_bridge.boost.cv_bridge_boost import cvtColor2  # type: ignore[import-not-found]
        except (ImportError, AttributeError, OSError) as exc:  # absent, or built for another numpy/python
            logger.debug("cv_bridge not usable (%s); using the built-in converter", exc)
            _real_cvtcolor_cache = None
        else:
            logger.debug("using cv_bridge's cvtColor2 for colour conversions")
            _real_cvtcolor_cache = cvtColor2
    return _real_cvtcolor_cache


def bridge_backend() -> str:
    """``"cv_bridge"`` when the real cv_bridge does colour conversions, else ``"builtin"``."""
    return "builtin" if _real_cvtcolor() is None else "cv_bridge"


def _cv2() -> Any:
    import cv2  # lazy: nodes import this module at start-up

    return cv2


# --------------------------------------------------------------------------- conversions


def _conversion_steps(src: EncodingInfo, dst: EncodingInfo) -> tuple[str, ...]:
    """cv_bridge's rules for which conversions make sense, as cv2.COLOR_* names and _DEPTH steps."""
    if not src.is_color:
        if dst.is_color:
            raise ImageConversionError(
                f"[{src.name}] is not a colour encoding but [{dst.name}] is, so the conversion has no "
                f"meaning; ask for 'passthrough' or a {src.generic[:-1]}N type"
            )
        if src.channels != dst.channels:
            raise ImageConversionError(f"[{src.name}] and [{dst.name}] do not have the same number of channels")
        return (_DEPTH,)
    if not dst.is_color:
        if src.channels != dst.channels:
            raise ImageConversionError(
                f"[{src.name}] is a colour encoding and [{dst.name}] is not, so they must have the same "
                f"number of channels ({src.channels} vs {dst.channels})"
            )
        return (_DEPTH,)
    steps = _CONVERSIONS.get((src.family, dst.family))
    if steps is None:
        targets = sorted(n for n, i in ENCODINGS.items() if (src.family, i.family) in _CONVERSIONS)
        raise ImageConversionError(
            f"cannot convert [{src.name}] to [{dst.name}]; possible targets: {', '.join(targets)}"
        )
    if src.bit_depth != dst.bit_depth and src.family != dst.family:
        steps = (*steps, _DEPTH)
    return steps


def _change_depth(img: np.ndarray, src_bits: int, dst: EncodingInfo) -> np.ndarray:
    """cv::Mat::convertTo to ``dst.dtype``: x257 / 257 between 8 and 16 bits, round and saturate."""
    scale = _DEPTH_SCALES.get((src_bits, dst.bit_depth), 1.0)
    if img.dtype == dst.dtype and scale == 1.0:
        return img.copy()
    if img.dtype == np.uint8 and dst.dtype == np.uint16:  # exact integer paths, 10x faster
        return img.astype(np.uint16) * np.uint16(257)
    if img.dtype == np.uint16 and dst.dtype == np.uint8:  # x/257 never ends in .5, so this is rint
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    values = img.astype(np.float64)
    if scale != 1.0:
        values *= scale
    if dst.dtype.kind == "f":
        return values.astype(dst.dtype)
    limits = np.iinfo(dst.dtype)
    np.rint(values, out=values)
    np.nan_to_num(values, copy=False, nan=0.0)
    np.clip(values, limits.min, limits.max, out=values)
    return values.astype(dst.dtype)


def _builtin_convert(img: np.ndarray, src: EncodingInfo, dst: EncodingInfo) -> np.ndarray:
    steps = _conversion_steps(src, dst)
    cv2 = _cv2()
    out = img
    try:
        for step in steps:
            if step == _DEPTH:
                out = _change_depth(out, src.bit_depth, dst)
            else:
                out = cv2.cvtColor(out, getattr(cv2, step))
    except cv2.error as exc:
        raise ImageConversionError(f"OpenCV could not convert [{src.name}] to [{dst.name}]: {exc}") from exc
    return out


def _convert(img: np.ndarray, src_encoding: str, desired_encoding: str | None) -> np.ndarray:
    """``img`` (stored as ``src_encoding``) in ``desired_encoding``; passthrough returns it as is."""
    if desired_encoding is None or desired_encoding in _PASSTHROUGH_NAMES:
        return img
    src = encoding_info(src_encoding)
    dst = encoding_info(desired_encoding)
    real = _real_cvtcolor()
    if real is None:
        return _builtin_convert(img, src, dst)
    try:
        out = real(img, _CV_BRIDGE_SPELLING.get(src.name, src.name), _CV_BRIDGE_SPELLING.get(dst.name, dst.name))
    except Exception as exc:  # cv_bridge raises RuntimeError (boost) or its CvBridgeError
        raise ImageConversionError(f"cv_bridge could not convert [{src.name}] to [{dst.name}]: {exc}") from exc
    return np.asarray(out)


def convert(img: np.ndarray, src_encoding: str, desired_encoding: str) -> np.ndarray:
    """Pixels ``img`` stored as ``src_encoding``, converted by the rules of :func:`imgmsg_to_cv2`."""
    return _convert(img, src_encoding, desired_encoding)
