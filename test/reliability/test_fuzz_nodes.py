"""Fuzzing: malformed Image / CompressedImage messages against the converter and running nodes.

test/core/test_imaging.py already checks small, nearly consistent messages built from plain
namespaces; here the messages are real ``sensor_msgs`` messages (what crosses a topic) with
huge declared dimensions, junk steps, encodings, byte orders and truncated or tampered data,
and the properties are about survival and bookkeeping:

* the converter: every outcome is an image or ImageConversionError, and the memory a
  conversion takes is bounded by the data actually sent, not by what the header declares;
* a running classifier_node and recorder_node, over real topics: the node stays up, every
  bad message is counted (node counters and /diagnostics == what was sent) and good
  frames after them are still classified / saved.

``DLI_FUZZ_EXAMPLES`` scales the number of messages (benchmarks/reliability.py runs more).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fixtures_models import build_colour_model_dir
from fuzzmsgs import compressed_images, environ_int, image_msg, images
from hypothesis import HealthCheck, given, settings
from oracle import agrees, expected_rgb8
from scenarios import fuzz_classifier, fuzz_recorder

from dli_perception.core.imaging import compressed_imgmsg_to_cv2, imgmsg_to_cv2, to_rgb8
from dli_perception.errors import ImageConversionError

HERE = Path(__file__).resolve().parent
EXAMPLES = environ_int("DLI_FUZZ_EXAMPLES", 60)


# --------------------------------------------------------------------------- the converter


def _warm_up() -> None:
    """Run every conversion path once, so lazy imports and caches are not counted as a conversion's memory."""
    for encoding in ("rgb8", "mono8", "mono16", "yuv422", "bayer_rggb8", "16UC1", "8UC3"):
        msg = image_msg(2, 2, encoding, 2 * 2 * 4, bytes(2 * 2 * 2 * 4))
        for convert in _conversions(msg):
            try:
                convert()
            except ImageConversionError:
                pass


def _conversions(msg):
    yield lambda: to_rgb8(msg)
    for desired in ("passthrough", "bgr8", "mono8", "32FC1"):
        yield lambda desired=desired: imgmsg_to_cv2(msg, desired)


@settings(max_examples=4 * EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=images())
def test_converter_gives_an_image_or_image_conversion_error_with_memory_bounded_by_the_data(msg):
    _warm_up()
    budget = 16 * len(msg.data) + 256 * 1024  # conversions make a few copies of the pixels, never of the header's claim
    for convert in _conversions(msg):
        tracemalloc.start()
        try:
            out = convert()
        except ImageConversionError:
            out = None
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak <= budget, (peak, budget, msg.height, msg.width, msg.step, msg.encoding, len(msg.data))
        if out is not None:
            assert isinstance(out, np.ndarray) and out.shape[:2] == (msg.height, msg.width)
    _assert_converter_agrees_with_the_oracle(msg)


def _assert_converter_agrees_with_the_oracle(msg) -> None:
    """to_rgb8 refuses exactly what the independent oracle refuses and otherwise returns its pixels."""
    expected = expected_rgb8(msg)
    try:
        rgb = to_rgb8(msg)
    except ImageConversionError as exc:
        assert not expected.valid, f"refused a valid message ({exc}): {_fields(msg)}"
        return
    assert expected.valid, f"accepted a message the oracle refuses: {_fields(msg)}"
    assert agrees(expected, rgb), (_fields(msg), rgb[:2, :2], expected.rgb[:2, :2])


def _fields(msg) -> dict:
    names = ("format",) if hasattr(msg, "format") else ("height", "width", "encoding", "step", "is_bigendian")
    return {**{n: getattr(msg, n) for n in names}, "data_bytes": len(msg.data)}


@pytest.mark.parametrize("encoding", ["rgb8", "mono16", "yuv422", "bayer_grbg8", "32FC1", "8UC4"])
def test_a_60000x60000_image_with_10_bytes_allocates_nothing(encoding):
    msg = image_msg(60000, 60000, encoding, 60000 * 8, bytes(range(10)))
    _warm_up()
    tracemalloc.start()
    try:
        for convert in _conversions(msg):
            with pytest.raises(ImageConversionError, match="truncated"):
                convert()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak


@settings(max_examples=3 * EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=compressed_images(max_declared=1024))
def test_compressed_converter_gives_an_image_or_image_conversion_error(msg):
    for desired in ("passthrough", "rgb8", "mono16"):
        try:
            out = compressed_imgmsg_to_cv2(msg, desired)
        except ImageConversionError:
            continue
        assert isinstance(out, np.ndarray) and out.size > 0
    _assert_converter_agrees_with_the_oracle(msg)


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=images(good_fraction=2))
def test_the_oracle_is_not_the_converter_and_both_outcomes_occur(msg):
    """Consistent messages are valid for the oracle on its own (it would catch a converter refusing them)."""
    _assert_converter_agrees_with_the_oracle(msg)


def test_the_oracle_accepts_known_images_with_their_pixels():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cases = {
        "rgb8": rgb.tobytes(),
        "bgr8": rgb[..., ::-1].tobytes(),
        "8UC3": rgb[..., ::-1].tobytes(),
        "RGB8 ": rgb.tobytes(),
        "rgba8": np.dstack([rgb, np.full((6, 8), 9, np.uint8)]).tobytes(),
    }
    for encoding, data in cases.items():
        channels = 4 if encoding == "rgba8" else 3
        expected = expected_rgb8(image_msg(6, 8, encoding, 8 * channels, data))
        assert expected.valid and np.array_equal(expected.rgb, rgb), encoding
    mono16 = (rng.integers(0, 256, (6, 8)) * 257).astype(">u2")
    expected = expected_rgb8(image_msg(6, 8, "mono16", 16, mono16.tobytes(), is_bigendian=1))
    assert np.array_equal(expected.rgb[..., 1], (mono16.astype(np.uint32) // 257).astype(np.uint8))
    for bad in (
        image_msg(6, 8, "rgb8", 24, rgb.tobytes()[:-1]),  # truncated
        image_msg(6, 8, "rgb8", 23, rgb.tobytes()),  # step shorter than a row
        image_msg(6, 8, "rgb9", 24, rgb.tobytes()),
        image_msg(6, 7, "yuv422", 14, bytes(84)),  # odd width
        image_msg(6, 8, "rgb8", 24, rgb.tobytes(), is_bigendian=2),
        image_msg(6, 8, "32FC1", 32, bytes(192)),  # no colour meaning
    ):
        assert not expected_rgb8(bad).valid, bad.encoding


BOMB_CHILD = textwrap.dedent(
    """
    import json, sys
    from types import SimpleNamespace
    sys.path.insert(0, sys.argv[1])
    import cv2, numpy  # loaded before the limit and the measurement
    from memprobe import jpeg_bytes, limit_address_space, measure_peak_growth_kb, png_bytes
    from dli_perception.core.imaging import to_rgb8
    kind, w, h = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    data = jpeg_bytes(w, h) if kind == "jpeg" else png_bytes(w, h, bytes(32))
    to_rgb8(SimpleNamespace(format=kind, data=jpeg_bytes(8, 8)))  # warm up the decoder
    limit_address_space(1 << 30)  # a regression fails to allocate instead of eating the machine
    result, growth = measure_peak_growth_kb(lambda: to_rgb8(SimpleNamespace(format=kind, data=data)))
    print(json.dumps({"bytes": len(data), "outcome": type(result).__name__, "error": str(result)[:300],
                      "peak_growth_kb": growth}))
    """
)


@pytest.mark.parametrize(
    ("kind", "width", "height"),
    [
        ("png", 60000, 60000),
        ("png", 30000, 30000),
        ("jpeg", 60000, 60000),
        ("jpeg", 10000, 10000),
    ],
)
def test_compressed_image_declaring_huge_dimensions_is_refused_without_allocating(kind, width, height):
    out = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(HERE), kind, str(width), str(height)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bytes"] < 1000
    assert result["outcome"] == "ImageConversionError", result
    assert result["peak_growth_kb"] < 64 * 1024, result


# --------------------------------------------------------------------------- running nodes


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    return build_colour_model_dir(tmp_path_factory.mktemp("fuzz_models") / "rgb", ("red", "green", "blue"))


@pytest.mark.graph
def test_classifier_node_survives_and_counts_every_malformed_frame(ros_context, colour_model):
    figures = fuzz_classifier(ros_context, colour_model, EXAMPLES)  # checks every frame's bookkeeping as it goes
    assert figures["bad"] >= EXAMPLES // 2 and figures["good"] > 3, figures  # the strategy covered both
    assert figures["counted_bad"] == figures["bad"] and figures["errors"] == 0


@pytest.mark.graph
def test_recorder_node_survives_refuses_and_counts_every_malformed_frame(ros_context, tmp_path):
    figures = fuzz_recorder(ros_context, tmp_path / "ds", EXAMPLES)  # checks every capture's outcome as it goes
    assert figures["bad"] >= EXAMPLES // 3 and figures["saved"] > 1, figures
    assert figures["refused_bad_frame"] == figures["bad"] and figures["frames_received"] == figures["sent"]
