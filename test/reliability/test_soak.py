"""Soak: camera_node -> classifier_node + recorder_node as processes on a live 30 fps stream.

The test runs ``DLI_SOAK_FRAMES`` classified frames (default 1000, about half a minute) and asserts
what must hold however fast the machine is: the classifier's and the recorder's resident memory
grow by less than 50 MB after the warm-up (one leaked 320x240 frame per result would add 230 kB a
frame, over 150 MB in this run), every frame is accounted for, no errors, and the recorded dataset's
manifest matches its files exactly. Latency at the start and the end is measured and returned, not
asserted (timings on a shared machine are not test material); benchmarks/reliability.py runs the
same scenario for 20 000 frames and prints the figures.
"""

from __future__ import annotations

import pytest
from fixtures_models import build_colour_model_dir
from fuzzmsgs import environ_int
from scenarios import soak

pytestmark = pytest.mark.graph

FRAMES = environ_int("DLI_SOAK_FRAMES", 1000)
GROWTH_LIMIT_MB = 50.0


def test_classifier_and_recorder_on_a_live_stream_keep_memory_flat_and_the_dataset_consistent(ros_context, tmp_path):
    model = build_colour_model_dir(
        tmp_path / "model", ("free", "blocked"), {"free": (90, 160, 90), "blocked": (140, 90, 70)}
    )
    figures = soak(ros_context, tmp_path, model, frames=FRAMES, fps=30.0, record_hz=10.0)
    print(figures)  # shown with -s; the benchmark prints the long run
    assert figures["classifier_rss_growth_mb"] < GROWTH_LIMIT_MB, figures
    assert figures["recorder_rss_growth_mb"] < GROWTH_LIMIT_MB, figures
    assert figures["errors"] == 0 and figures["frames_bad"] == 0, figures
    accounted = figures["frames_classified"] + figures["frames_dropped"] + figures["frames_without_model"]
    assert figures["frames_received"] == accounted, figures  # read after the stream stopped
    assert figures["frames_classified"] >= FRAMES
    assert figures["dataset_clean_on_reopen"] and figures["dataset_images"] == figures["recorder_final_count"]
    assert figures["dataset_images"] >= FRAMES / 30.0 * 10.0 * 0.5, figures  # about 10 images a second
    assert len(figures["dataset_classes"]) >= 2, figures  # the label changed while recording
