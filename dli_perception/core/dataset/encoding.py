"""Image bytes for the store: encode arrays as JPEG/PNG, check files fully decode, read files to import."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dli_perception.core import fsutil
from dli_perception.core.imagefiles import decode_rgb
from dli_perception.errors import ConfigError, ImageConversionError

#: Extensions torchvision's ImageFolder loads; files with these in a class directory are images.
IMAGE_FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class EncodedImage:
    """An image file's bytes ready to be stored: ``ext`` is ``.jpg`` or ``.png``."""

    data: bytes
    ext: str
    width: int
    height: int
    sha256: str


def probe_image(data: bytes) -> tuple[str, int, int]:
    """Fully decode image bytes with Pillow (the ImageFolder loader); return (format, width, height).

    Raises ``ValueError`` for anything Pillow cannot load completely (truncated or corrupt file).
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return (im.format or "").upper(), int(im.width), int(im.height)
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        raise ValueError(f"cannot decode image: {err}") from err


def encode_image(image_rgb: np.ndarray, image_format: str = "jpg", jpeg_quality: int = 95) -> EncodedImage:
    """Encode an ``HxWx3`` RGB (or ``HxW`` grey) uint8 array as JPEG or PNG.

    Raises :class:`ImageConversionError` for arrays of another shape or dtype.
    """
    import cv2

    arr = np.asarray(image_rgb)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3))):
        raise ImageConversionError(
            f"expected an HxWx3 RGB or HxW grey uint8 image, got shape {arr.shape} dtype {arr.dtype}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageConversionError(f"image is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3:
        arr = arr[:, :, 0]
    arr = np.ascontiguousarray(arr)
    if image_format == "jpg":
        ok, buf = cv2.imencode(".jpg", arr, [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)])
    elif image_format == "png":
        ok, buf = cv2.imencode(".png", arr, [int(cv2.IMWRITE_PNG_COMPRESSION), 1])
    else:
        raise ConfigError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {arr.shape} image as {image_format}")
    data = buf.tobytes()
    return EncodedImage(data, "." + image_format, int(arr.shape[1]), int(arr.shape[0]), fsutil.sha256_bytes(data))


def read_image_file(path: Path, encode: Callable[[np.ndarray], EncodedImage]) -> EncodedImage:
    """Read and check an image file for import; ``ValueError`` when it does not decode.

    8-bit JPEG and PNG files are kept byte for byte; anything else (16-bit PNG, BMP, TIFF,
    WebP ...) is decoded and handed to ``encode`` (the store's format and quality).
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read: {err}") from err
    fmt, width, height = probe_image(data)
    if fmt == "JPEG":
        return EncodedImage(data, ".jpg", width, height, fsutil.sha256_bytes(data))
    if fmt == "PNG" and len(data) > 25 and data[24] == 8:  # 8 bits per sample: ImageFolder reads it
        return EncodedImage(data, ".png", width, height, fsutil.sha256_bytes(data))
    rgb = decode_rgb(data)  # OpenCV scales 16-bit to 8-bit
    if rgb is not None:
        return encode(rgb)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return encode(np.asarray(im.convert("RGB")))
