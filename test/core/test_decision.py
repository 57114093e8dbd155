"""Decision layer: smoothing, threshold -> unknown, hysteresis and k-of-n against flicker."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dli_perception.core.decision import Decision, DecisionConfig, DecisionFilter
from dli_perception.errors import ConfigError

CLASSES = ["a", "b", "c"]


def run(filt: DecisionFilter, frames) -> list[Decision]:
    return [filt.update(np.asarray(p, dtype=np.float32)) for p in frames]


def labels(decisions: list[Decision]) -> list[str]:
    return [d.label for d in decisions]


def test_no_smoothing_follows_the_top_class():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="none", threshold=0.5, hysteresis=0.0))
    first, second = run(filt, [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    assert (first.label, first.index, first.changed) == ("a", 0, True)
    assert first.score == pytest.approx(0.7) and first.raw_label == "a"
    assert (second.label, second.changed) == ("b", True)
    assert filt.label == "b"


def test_ema_averages_frames():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="ema", ema_alpha=0.5, threshold=0.6, hysteresis=0.1))
    d = run(filt, [[1, 0, 0], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(d[1].probs, [0.5, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(d[2].probs, [0.25, 0.75, 0.0], atol=1e-6)
    assert labels(d) == ["a", "a", "b"]
    assert [x.raw_label for x in d] == ["a", "b", "b"]
    assert d[2].score == pytest.approx(0.75) and d[2].changed and not d[1].changed


def test_ema_ignores_a_single_outlier_frame():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="ema", ema_alpha=0.3, threshold=0.5, hysteresis=0.1))
    d = run(filt, [[0.98, 0.01, 0.01]] * 5 + [[0.0, 1.0, 0.0]])
    assert d[-1].raw_label == "b" and d[-1].label == "a" and not d[-1].changed


def test_low_confidence_is_unknown():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="none", threshold=0.6))
    d = filt.update(np.array([0.4, 0.35, 0.25]))
    assert (d.label, d.index) == ("unknown", -1)
    assert d.score == pytest.approx(0.4) and (d.raw_label, d.raw_score) == ("a", pytest.approx(0.4))


def test_unknown_label_is_configurable():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="none", threshold=0.9, unknown_label="nothing"))
    assert filt.update(np.array([0.5, 0.3, 0.2])).label == "nothing"


NOISY = [[0.55, 0.45, 0.0], [0.45, 0.55, 0.0]] * 10


def test_hysteresis_prevents_flicker_on_alternating_noisy_frames():
    steady = DecisionFilter(CLASSES, DecisionConfig(smoothing="none", threshold=0.4, hysteresis=0.2))
    flicker = DecisionFilter(CLASSES, DecisionConfig(smoothing="none", threshold=0.4, hysteresis=0.0))
    with_h, without_h = run(steady, NOISY), run(flicker, NOISY)
    assert set(labels(with_h)) == {"a"} and sum(d.changed for d in with_h) == 1
    assert sum(d.changed for d in without_h) == len(NOISY)  # the same frames do flicker without it
    # a clear winner still takes over
    assert steady.update(np.array([0.2, 0.8, 0.0])).label == "b"


def test_hysteresis_band_around_the_threshold():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="none", threshold=0.5, hysteresis=0.1))
    d = run(filt, [[0.55, 0.25, 0.2], [0.45, 0.3, 0.25], [0.41, 0.3, 0.29], [0.35, 0.33, 0.32], [0.45, 0.3, 0.25]])
    # enters at >= 0.5, holds down to 0.4, leaves below it, and needs >= 0.5 to come back
    assert labels(d) == ["a", "a", "a", "unknown", "unknown"]


def test_k_of_n_needs_k_votes_before_switching():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="k_of_n", k=3, n=5, threshold=0.5))
    a, b, low = [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25]
    d = run(filt, [a, a, a, b, b, b, low, low, low])
    assert labels(d) == ["unknown", "unknown", "a", "a", "a", "b", "b", "b", "unknown"]
    assert [x.changed for x in d] == [True, False, True, False, False, True, False, False, True]
    np.testing.assert_allclose(d[4].probs, np.mean([a, a, a, b, b], axis=0), atol=1e-6)
    assert d[4].score == pytest.approx(np.mean([0.8, 0.8, 0.8, 0.1, 0.1]))


def test_k_of_n_holds_the_label_when_no_class_wins_k():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="k_of_n", k=4, n=5, threshold=0.5))
    a, b = [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]
    d = run(filt, [a] * 4 + [b, a] * 6)
    assert set(labels(d)[3:]) == {"a"}
    loose = DecisionFilter(CLASSES, DecisionConfig(smoothing="k_of_n", k=3, n=5, threshold=0.5))
    assert len(set(labels(run(loose, [a] * 4 + [b, a] * 6))[3:])) == 2  # k=3 of 5 lets it flip


def test_reset_forgets_history():
    filt = DecisionFilter(CLASSES, DecisionConfig(smoothing="ema", ema_alpha=0.2, threshold=0.5))
    run(filt, [[0.9, 0.05, 0.05]] * 3)
    filt.reset()
    assert filt.label is None
    d = filt.update(np.array([0.05, 0.9, 0.05]))
    assert d.label == "b" and d.changed
    np.testing.assert_allclose(d.probs, [0.05, 0.9, 0.05], atol=1e-6)


@pytest.mark.parametrize(
    "probs, match",
    [
        ([0.5, 0.5], "3 class probabilities"),
        ([[0.2, 0.3, 0.5]], "3 class probabilities"),
        ([2.0, -1.0, 0.5], "summing"),
        ([0.2, 0.2, 0.2], "summing"),
        ([np.nan, 0.5, 0.5], "NaN"),
    ],
)
def test_bad_probabilities_are_refused(probs, match):
    with pytest.raises(ConfigError, match=match):
        DecisionFilter(CLASSES).update(np.asarray(probs, dtype=np.float64))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"smoothing": "median"}, "smoothing"),
        ({"ema_alpha": 0.0}, "ema_alpha"),
        ({"ema_alpha": 1.5}, "ema_alpha"),
        ({"k": 6, "n": 5}, "k <= n"),
        ({"k": 0}, "k <= n"),
        ({"threshold": 1.5}, "threshold"),
        ({"hysteresis": -0.1}, "hysteresis"),
        ({"unknown_label": ""}, "unknown_label"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DecisionConfig(**kwargs)


def test_class_named_like_unknown_is_refused():
    with pytest.raises(ConfigError, match="unknown_label"):
        DecisionFilter(["unknown", "cat"])
    with pytest.raises(ConfigError):
        DecisionFilter([])


probability_rows = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda r: sum(r) > 1e-3)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(probability_rows, min_size=1, max_size=30),
    smoothing=st.sampled_from(["ema", "k_of_n", "none"]),
    threshold=st.floats(0.0, 1.0),
    hysteresis=st.floats(0.0, 0.5),
)
def test_decisions_are_always_well_formed(rows, smoothing, threshold, hysteresis):
    cfg = DecisionConfig(smoothing=smoothing, threshold=threshold, hysteresis=hysteresis, k=2, n=3)
    filt = DecisionFilter(CLASSES, cfg)
    previous = None
    for row in rows:
        probs = np.asarray(row) / np.sum(row)
        d = filt.update(probs)
        assert d.label in [*CLASSES, "unknown"] and 0.0 <= d.score <= 1.0 + 1e-6
        assert (d.index == -1) == (d.label == "unknown")
        assert d.changed == (d.label != previous)
        assert d.probs.sum() == pytest.approx(1.0, abs=1e-5)
        if smoothing != "k_of_n" and d.label != "unknown":
            assert d.score >= threshold - hysteresis - 1e-9
        previous = d.label
