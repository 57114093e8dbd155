"""How the regression demo scores its run against the truth the scene camera kept for every frame.

* the dataset: each saved image's XY target against what its frame showed (:func:`check_xy_dataset`);
* the live stream: the mean **target error** of the model, the distance (normalised image units,
  the image is 2 wide) between the predicted point of a frame and the true one, beside the error of
  always predicting the training set's mean target (:class:`XYLiveScore`);
* the drive: the mean **tracking error**, the angle between the robot's heading and the direction
  of the target, beside that of a robot that never turns (:class:`TrackingScore`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.core.contracts import XYResult
from dli_perception.demo.xy_scene import FrameTruth

XY_MATCH = 1e-3
"""Largest difference (normalised) between a saved target and its frame's truth that counts as the same
(the manifest stores targets rounded)."""


def check_xy_dataset(dataset_dir: Path, truth: Callable[[int], FrameTruth | None]) -> tuple[dict[str, Any], list[str]]:
    """Every saved image's target against its frame's truth (by stamp); returns the summary fields
    (images, verified, mislabelled, unverifiable, mean_xy) and the doubtful files."""
    from dli_perception.core.dataset import DatasetStore

    with DatasetStore(dataset_dir, readonly=True) as store:
        entries = [e for e in store.entries if e.xy is not None]
    wrong, unsure = [], []
    for e in entries:
        shown = truth(e.stamp_ns)
        if shown is None:
            unsure.append(e.file)
        elif abs(shown.x - e.xy[0]) > XY_MATCH or abs(shown.y - e.xy[1]) > XY_MATCH:
            wrong.append(e.file)
    n = len(entries)
    mean = (sum(e.xy[0] for e in entries) / n, sum(e.xy[1] for e in entries) / n) if n else (0.0, 0.0)
    info: dict[str, Any] = dict(images=n, verified=n - len(wrong) - len(unsure), mislabelled=wrong)
    info.update(unverifiable=unsure, mean_xy=[round(mean[0], 4), round(mean[1], 4)])
    return info, wrong + unsure


@dataclass
class XYLiveScore:
    """The classifier's XY results scored against the truth of their frames."""

    truth: Callable[[int], FrameTruth | None]
    mean_xy: tuple[float, float] = (0.0, 0.0)
    frames: int = 0
    errors: list[float] = field(default_factory=list)  # raw prediction vs truth
    smoothed_errors: list[float] = field(default_factory=list)  # EMA-smoothed point vs truth
    baseline_errors: list[float] = field(default_factory=list)  # training mean vs truth
    latency_ms: list[float] = field(default_factory=list)

    def add(self, result: XYResult) -> None:
        self.frames += 1
        shown = self.truth(result.stamp_ns)
        if shown is None:
            return
        self.errors.append(math.hypot(result.raw_x - shown.x, result.raw_y - shown.y))
        self.smoothed_errors.append(math.hypot(result.x - shown.x, result.y - shown.y))
        self.baseline_errors.append(math.hypot(self.mean_xy[0] - shown.x, self.mean_xy[1] - shown.y))
        if result.latency_ms is not None:
            self.latency_ms.append(float(result.latency_ms))

    @property
    def scored(self) -> int:
        return len(self.errors)

    def summary(self, seconds: float) -> dict[str, Any]:
        """The ``live`` section of ``summary.json`` (errors in normalised image units)."""
        mean = _mean(self.errors)
        baseline = _mean(self.baseline_errors)
        return {
            "seconds": round(seconds, 2),
            "frames": self.frames,
            "scored": self.scored,
            "mean_target_error": mean,
            "mean_smoothed_error": _mean(self.smoothed_errors),
            "mean_error_of_mean_target": baseline,
            "error_ratio": None if mean is None or not baseline else round(mean / baseline, 4),
            "latency_ms_median": _median(self.latency_ms),
        }

    def line(self) -> str:
        s = self.summary(0.0)
        if s["mean_target_error"] is None:
            return "      no XY result could be scored"
        latency = s["latency_ms_median"]
        return (
            f"      mean target error {s['mean_target_error']:.3f} (normalised; the image is 2 wide) on "
            f"{self.scored} frames; always predicting the training mean: {s['mean_error_of_mean_target']:.3f} "
            f"(ratio {s['error_ratio']:.2f}); EMA-smoothed point {s['mean_smoothed_error']:.3f}"
            + (f"; latency {latency:.0f} ms" if latency is not None else "")
        )


@dataclass
class TrackingScore:
    """While driving: the angle between the robot's heading and the target, sampled at a steady rate, and
    the same for a robot that keeps its starting heading (what steering is compared with)."""

    errors: list[float] = field(default_factory=list)  # radians, absolute
    baseline: list[float] = field(default_factory=list)

    def add(self, relative_bearing: float, still_relative_bearing: float) -> None:
        self.errors.append(abs(math.remainder(relative_bearing, math.tau)))
        self.baseline.append(abs(math.remainder(still_relative_bearing, math.tau)))

    def summary(self, seconds: float) -> dict[str, Any]:
        mean, still = _mean(self.errors), _mean(self.baseline)
        deg = lambda v: None if v is None else round(math.degrees(v), 2)  # noqa: E731
        return {
            "seconds": round(seconds, 2),
            "samples": len(self.errors),
            "mean_tracking_error_deg": deg(mean),
            "max_tracking_error_deg": deg(max(self.errors)) if self.errors else None,
            "mean_error_not_turning_deg": deg(still),
            "error_ratio": None if mean is None or not still else round(mean / still, 4),
        }

    def line(self) -> str:
        s = self.summary(0.0)
        if s["mean_tracking_error_deg"] is None:
            return "      no tracking sample"
        return (
            f"      mean tracking error {s['mean_tracking_error_deg']:.1f} deg (heading vs direction of the target; "
            f"max {s['max_tracking_error_deg']:.1f} deg) over {s['samples']} samples; a robot that does not turn: "
            f"{s['mean_error_not_turning_deg']:.1f} deg (ratio {s['error_ratio']:.2f})"
        )


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None
