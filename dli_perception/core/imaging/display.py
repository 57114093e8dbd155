"""Any image made viewable: label images, depth images and colour images to 8-bit mono or colour.

:func:`cvt_color_for_display` behaves like cv_bridge's ``cvtColorForDisplay``:

- a label image (``32SC1``) shown as ``bgr8`` gets one distinct, saturated colour per label and
  black for the background label (``bg_label``, -1 by default);
- a one-channel image with a value range (``min_image_value`` != ``max_image_value``, or the range
  of its finite values with ``do_dynamic_scaling``) is scaled linearly to 0-255, then shown grey or,
  with ``colormap`` (a ``cv2.COLORMAP_*`` number), in false colour with NaN pixels black; a
  constant image shows mid grey;
- anything else is converted with the usual colour rules, reading generic types the OpenCV way
  (``8UC3`` as bgr8, ``16UC1`` as mono16).

The output encoding must be 8-bit mono or colour (mono8, bgr8, rgb8, bgra8, rgba8); empty means bgr8.
Errors raise ImageConversionError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dli_perception.core.imaging.conversion import convert
from dli_perception.core.imaging.encoding_table import EncodingInfo, encoding_info, generic_encoding
from dli_perception.errors import ImageConversionError

__all__ = ["DISPLAY_ENCODINGS", "cvt_color_for_display", "label_colors"]

DISPLAY_ENCODINGS = ("mono8", "bgr8", "rgb8", "bgra8", "rgba8")
"""Encodings an image can be shown in."""

_OPENCV_READING = {
    "8UC1": "mono8",
    "16UC1": "mono16",
    "8UC3": "bgr8",
    "8UC4": "bgra8",
    "16UC3": "bgr16",
    "16UC4": "bgra16",
}
_GOLDEN = 0.6180339887498949  # hue step that keeps neighbouring labels far apart on the colour wheel
_MID_GREY = 128


def label_colors(labels: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 BGR colours for integer labels: full saturation and value, hue by golden-ratio steps.

    The same label always gets the same colour, in any image.
    """
    import cv2

    hues = np.mod(np.asarray(labels, dtype=np.float64) * _GOLDEN, 1.0) * 180.0
    hsv = np.empty((1, hues.size, 3), np.uint8)
    hsv[0, :, 0] = np.minimum(np.floor(hues), 179).astype(np.uint8)
    hsv[0, :, 1:] = 255
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]


def _labels_to_bgr(img: np.ndarray, bg_label: int) -> np.ndarray:
    values, inverse = np.unique(img, return_inverse=True)
    palette = label_colors(values)
    palette[values == bg_label] = 0
    return palette[inverse.reshape(img.shape)]


def _output_encoding(encoding_out: str, source: EncodingInfo) -> str:
    if not encoding_out:
        if source.dtype.itemsize * 8 not in (8, 16, 32):
            raise ImageConversionError(
                f"no display encoding given and none can be guessed for {source.name}: pass encoding_out"
            )
        return "bgr8"
    target = encoding_info(encoding_out)
    if target.name not in DISPLAY_ENCODINGS:
        raise ImageConversionError(f"images are displayed as {', '.join(DISPLAY_ENCODINGS)}, not {encoding_out!r}")
    return target.name


def _scaled(img: np.ndarray, low: float, high: float, colormap: int) -> tuple[np.ndarray, str]:
    """Linear map of [low, high] to [0, 255] (saturated, NaN -> 0), grey or through ``colormap``."""
    import cv2

    values = (img.astype(np.float64) - low) * (255.0 / (high - low))
    nan = np.isnan(values)
    values[nan] = 0.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if colormap == -1:
        return gray, "mono8"
    try:
        colour = cv2.applyColorMap(gray, int(colormap))
    except cv2.error as exc:
        raise ImageConversionError(f"colormap {colormap} is not an OpenCV colour map: {exc}") from exc
    colour[nan] = 0
    return colour, "bgr8"


def cvt_color_for_display(
    image: Any,
    encoding_in: str = "",
    encoding_out: str = "",
    do_dynamic_scaling: bool = False,
    min_image_value: float = 0.0,
    max_image_value: float = 0.0,
    colormap: int = -1,
    bg_label: int = -1,
) -> np.ndarray:
    """``image`` (stored as ``encoding_in``; empty means its generic type) as a viewable 8-bit image.

    See the module docstring for the rules. Raises ImageConversionError when the input cannot be
    shown as asked (more than one channel with a value range, an unknown encoding ...).
    """
    if not isinstance(image, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(image).__name__}")
    channels = 1 if image.ndim == 2 else image.shape[-1]
    generic = generic_encoding(image.dtype, channels)
    source = encoding_info(encoding_in or generic)
    if source.generic != generic:
        raise ImageConversionError(f"encoding_in is {source.name} but the image is {generic} (shape {image.shape})")
    target = _output_encoding(encoding_out, source)
    img = image.reshape(image.shape[:2]) if channels == 1 else image

    if source.name == "32SC1" and target != "mono8":
        return convert(_labels_to_bgr(img, bg_label), "bgr8", target)

    low, high = float(min_image_value), float(max_image_value)
    if do_dynamic_scaling:
        finite = img[np.isfinite(img)] if img.dtype.kind == "f" else img
        if finite.size == 0 or finite.min() == finite.max():
            grey = np.full(img.shape[:2], _MID_GREY, np.uint8)
            return convert(grey, "mono8", target)
        low, high = float(finite.min()), float(finite.max())
    if low != high:
        if channels != 1:
            raise ImageConversionError(f"a value range applies to one-channel images, not {source.name}")
        scaled, scaled_encoding = _scaled(img, low, high, colormap)
        return convert(scaled, scaled_encoding, target)

    reading = _OPENCV_READING.get(source.name, source.name)
    if reading == target:
        return img
    try:
        return convert(img, reading, target)
    except ImageConversionError as exc:
        raise ImageConversionError(
            f"{exc}; for depth or other non-colour images give min_image_value/max_image_value or "
            "do_dynamic_scaling=True"
        ) from exc
