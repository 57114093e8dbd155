"""Hypothesis strategies for malformed sensor_msgs Image / CompressedImage messages, and the oracle.

Shared by the reliability tests and ``benchmarks/reliability.py``. Every message the
strategies build is a real ``sensor_msgs.msg`` message whose fields fit their ROS types
(uint32 sizes, uint8 ``is_bigendian``), so it can be published on a topic; what is wrong
with it is the combination: sizes, step, encoding and data that disagree, huge declared
dimensions with a few bytes, unknown encodings, truncated or tampered compressed data.

:func:`expected_outcome` says what the classifier and recorder nodes must make of a
message: ``"good"`` when it holds a valid image (and the model's preprocessing accepts it),
``"bad"`` when the converter must refuse it. The verdict comes from ``oracle.py``, which
decodes messages itself and shares no code with the converter it judges.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from hypothesis import strategies as st
from memprobe import jpeg_bytes, png_bytes
from oracle import expected_rgb8
from sensor_msgs.msg import CompressedImage, Image

from dli_perception.core.imaging import ENCODINGS, encoding_info
from dli_perception.core.preprocess import PreprocessConfig, preprocess
from dli_perception.errors import ConfigError

MAX_UINT32 = 2**32 - 1
MAX_DATA = 48 * 1024
"""Largest data field the strategies build (bytes): fuzzing is about shapes, not bandwidth."""

GOOD_ENCODINGS = (
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "yuv422",
    "bayer_rggb8",
    "8UC3",
    "16UC1",
)
JUNK_ENCODINGS = (
    "",
    "rgb9",
    "RGB8 ",
    "jpeg",
    "8UC5",
    "32FC1",
    "64FC4",
    "bayer",
    "yuv422_yuy2",
    "\u00e9\u00e8",
    "x" * 300,
)
HUGE_SIZES = (60000, 65535, 2**20, 2**31 - 1, MAX_UINT32)
TEXT = st.characters(exclude_characters="\x00")
"""Characters of fuzzed strings: NUL ends a string in the C layer, so it cannot cross a topic intact."""


def _bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def image_msg(
    height: int, width: int, encoding: str, step: int, data: bytes, is_bigendian: int = 0, stamp_ns: int = 0
) -> Image:
    """A sensor_msgs/Image with exactly these fields (nothing checked)."""
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=is_bigendian)
    msg.data = data
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "fuzz"
    return msg


@st.composite
def image_fields(draw, good_fraction: int = 4) -> dict[str, Any]:
    """Image fields: about 1 in ``good_fraction`` consistent, the rest malformed in one or more ways."""
    consistent = draw(st.integers(0, good_fraction - 1)) == good_fraction - 1  # malformed is the simplest case
    encoding = draw(st.sampled_from(GOOD_ENCODINGS))
    info = encoding_info(encoding)
    height = draw(st.integers(1, 48))
    width = draw(st.integers(1, 48)) * (2 if info.family in ("uyvy", "yuyv") else 1)
    row = width * info.channels * info.dtype.itemsize
    step = row + draw(st.sampled_from([0, 0, 0, 4]))
    size = step * height
    seed = draw(st.integers(0, 2**31))
    fields = {"height": height, "width": width, "encoding": encoding, "step": step, "is_bigendian": 0}
    if consistent:  # must be classified / saved
        fields["is_bigendian"] = draw(st.sampled_from([0, 0, 1])) if info.dtype.itemsize > 1 else 0
        fields["data"] = _bytes(size, seed)
        return fields
    faults = draw(
        st.lists(
            st.sampled_from(["huge", "zero", "step", "truncate", "encoding", "endian", "empty", "odd_yuv"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    if "huge" in faults:  # huge declared dimensions with a few bytes of data
        which = draw(st.sampled_from(["height", "width", "both"]))
        if which in ("height", "both"):
            fields["height"] = draw(st.sampled_from(HUGE_SIZES))
        if which in ("width", "both"):
            fields["width"] = draw(st.sampled_from(HUGE_SIZES))
        fields["step"] = draw(st.sampled_from([fields["step"], MAX_UINT32, 0]))
        size = draw(st.integers(0, 64))
    if "zero" in faults:
        fields[draw(st.sampled_from(["height", "width", "step"]))] = 0
    if "step" in faults:
        fields["step"] = draw(
            st.one_of(st.integers(0, max(0, row - 1)), st.integers(row + 1, row + 64), st.just(MAX_UINT32))
        )
    if "truncate" in faults and size > 0:
        size = draw(st.integers(0, size - 1))
    if "encoding" in faults:
        fields["encoding"] = draw(st.one_of(st.sampled_from(JUNK_ENCODINGS), st.text(TEXT, max_size=12)))
    if "endian" in faults:
        fields["is_bigendian"] = draw(st.integers(2, 255))
    if "empty" in faults:
        size = 0
    if "odd_yuv" in faults:
        fields["encoding"] = draw(st.sampled_from(["yuv422", "yuyv", "uyvy"]))
        fields["width"] = 2 * draw(st.integers(0, 20)) + 1
        fields["step"] = fields["width"] * 2
        size = fields["step"] * fields["height"]
    fields["data"] = _bytes(min(size, MAX_DATA), seed)
    return fields


def images(good_fraction: int = 4) -> st.SearchStrategy[Image]:
    """sensor_msgs/Image messages, mostly malformed (see :func:`image_fields`)."""
    return image_fields(good_fraction).map(lambda f: image_msg(**f))


# --------------------------------------------------------------------------- compressed


def compressed_msg(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


@st.composite
def compressed_fields(draw, max_declared: int = 2048) -> dict[str, Any]:
    """CompressedImage fields: valid, truncated, bit-flipped, header-tampered or random data; odd formats.

    ``max_declared`` caps the dimensions tampered headers declare (decompression bombs beyond it
    are tested on their own, in a memory-limited child process).
    """
    import cv2

    fmt = draw(
        st.sampled_from(
            [
                "jpeg",
                "png",
                "rgb8; jpeg compressed bgr8",
                "bgr8; png compressed",
                "16UC1; compressedDepth png",
                "",
                "tiff",
                "x; y",
            ]
        )
    )
    h, w = draw(st.integers(1, 32)), draw(st.integers(1, 32))
    pixels = np.random.default_rng(draw(st.integers(0, 2**31))).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ext = draw(st.sampled_from([".jpg", ".png"]))
    valid = cv2.imencode(ext, pixels)[1].tobytes()
    kind = draw(st.sampled_from(["valid", "truncate", "flip", "declare", "random", "empty"]))
    if kind == "valid":
        data = valid
    elif kind == "truncate":
        data = valid[: draw(st.integers(0, len(valid) - 1))]
    elif kind == "flip":
        buf = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(buf)
    elif kind == "declare":
        dw, dh = draw(st.integers(1, max_declared)), draw(st.integers(1, max_declared))
        data = jpeg_bytes(dw, dh) if draw(st.booleans()) else png_bytes(dw, dh, b"\0" * draw(st.integers(0, 64)))
    elif kind == "random":
        data = draw(st.binary(max_size=512))
    else:
        data = b""
    return {"format": fmt, "data": data}


def compressed_images(max_declared: int = 2048) -> st.SearchStrategy[CompressedImage]:
    return compressed_fields(max_declared).map(lambda f: compressed_msg(f["format"], f["data"]))


# --------------------------------------------------------------------------- oracle


def roundtrip(msg: Any) -> Any:
    """``msg`` serialised to CDR and read back: exactly what a subscriber receives."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def expected_outcome(msg: Any, cfg: PreprocessConfig | None = None) -> str:
    """``"good"`` or ``"bad"``: what a node must make of ``msg`` (the oracle's verdict + the model's preprocessing)."""
    expected = expected_rgb8(msg)
    if not expected.valid:
        return "bad"
    if cfg is not None:
        try:
            preprocess(expected.rgb, cfg)
        except ConfigError:
            return "bad"
    return "good"


def all_encodings() -> list[str]:
    return sorted(ENCODINGS)


def environ_int(name: str, default: int) -> int:
    """An integer from the environment (the benchmark script scales the tests' sizes with these)."""
    return int(os.environ.get(name, default))
