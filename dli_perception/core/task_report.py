"""Training report of a regression or multi-label model (the classification one is :mod:`.report`).

- regression: ``xy_scatter.png`` (predicted against true ``x`` and ``y`` on the validation split, with the
  identity line and the mean-target baseline), ``error_histogram.png`` (Euclidean error per image, model
  against baseline) and ``loss_curves.png`` (loss and mean error per epoch);
- multilabel: ``per_label.md``/``per_label.csv`` (precision, recall, F1, support and threshold per label),
  ``threshold_curves.png`` (precision, recall and F1 against the threshold, one panel per label, the
  chosen threshold marked) and ``loss_curves.png`` (loss and macro F1 per epoch).

Figures come from the best epoch's validation outputs; matplotlib is used through its Agg canvas as in
:mod:`.report`; every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core import fsutil, tasks
from dli_perception.core.report import _as_dict, _figure, _save_png

SCATTER_FILE = "xy_scatter.png"
ERROR_HIST_FILE = "error_histogram.png"
CURVES_FILE = "loss_curves.png"
THRESHOLD_FILE = "threshold_curves.png"
PER_LABEL_FILE = "per_label"  # .md and .csv


def plot_xy_scatter(pred: np.ndarray, target: np.ndarray, baseline: Sequence[float] | None, path: Path) -> Path:
    """Predicted against true ``x`` and ``y`` (normalised units), one panel each."""
    fig = _figure(10, 5)
    for j, (ax, name) in enumerate(zip(fig.subplots(1, 2), tasks.XY_NAMES, strict=True)):
        ax.scatter(target[:, j], pred[:, j], s=10, alpha=0.6, label="model")
        ax.plot([-1, 1], [-1, 1], color="black", linewidth=0.8, label="perfect")
        if baseline is not None:
            ax.axhline(baseline[j], color="grey", linestyle=":", label="mean-target baseline")
        mae = float(np.abs(pred[:, j] - target[:, j]).mean())
        ax.set(title=f"{name}: MAE {mae:.3f}", xlabel=f"true {name}", ylabel=f"predicted {name}", xlim=(-1.1, 1.1))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_error_histogram(pred: np.ndarray, target: np.ndarray, baseline: Sequence[float] | None, path: Path) -> Path:
    """Histogram of the Euclidean error per validation image, beside the mean-target baseline's."""
    err = np.sqrt(((pred - target) ** 2).sum(axis=1))
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    top = float(err.max()) if len(err) else 1.0
    base = None
    if baseline is not None:
        base = np.sqrt(((target - np.asarray(baseline)) ** 2).sum(axis=1))
        top = max(top, float(base.max()))
    bins = np.linspace(0.0, max(top, 1e-3), 25)
    ax.hist(err, bins=bins, alpha=0.7, label=f"model (mean {err.mean():.3f})")
    if base is not None:
        ax.hist(base, bins=bins, alpha=0.4, label=f"mean-target baseline (mean {base.mean():.3f})")
    ax.set(title=f"validation error ({len(err)} images)", xlabel="Euclidean error (normalised units)", ylabel="images")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_task_curves(history: Sequence[Any], metric_name: str, path: Path) -> Path:
    """Loss per epoch (training and validation) and the validation metric (mean error or macro F1)."""
    rows = [_as_dict(h) for h in history]
    epochs = [int(r["epoch"]) for r in rows]
    fig = _figure(10, 4)
    ax_loss, ax_metric = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
    ax_loss.set(title="loss", xlabel="epoch")
    values = [r.get("val_metric") for r in rows]
    ax_metric.plot(epochs, [math.nan if v is None else v for v in values], "s-", label="validation")
    ax_metric.set(title=metric_name.replace("_", " "), xlabel="epoch")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_threshold_curves(
    curves: Mapping[str, Mapping[str, list]], thresholds: Mapping[str, float], path: Path
) -> Path:
    """Precision, recall and F1 against the threshold, one panel per label, the chosen threshold marked."""
    labels = list(curves)
    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig = _figure(4.2 * cols, 3.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, label in zip(axes, labels, strict=False):
        c = curves[label]
        for key in ("precision", "recall", "f1"):
            ax.plot(c["threshold"], c[key], label=key)
        t = thresholds.get(label, tasks.DEFAULT_THRESHOLD)
        ax.axvline(t, color="grey", linestyle=":", label=f"threshold {t:.2f}")
        ax.set(title=label, xlabel="threshold (score)", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save_png(fig, path)


def write_per_label_table(per_label: Mapping[str, Mapping[str, float]], path: Path) -> list[Path]:
    """Per-label precision, recall, F1, support and threshold as ``<path>.md`` and ``<path>.csv``."""
    columns = ("precision", "recall", "f1", "support", "threshold")
    lines = [
        "| label | precision | recall | F1 | support | threshold |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("label", *columns))
    for name, m in per_label.items():
        p, r, f1, t = (float(m.get(k, 0.0)) for k in ("precision", "recall", "f1", "threshold"))
        support = int(m.get("support", 0))
        lines.append(f"| {name} | {p:.3f} | {r:.3f} | {f1:.3f} | {support} | {t:.2f} |")
        writer.writerow((name, f"{p:.6f}", f"{r:.6f}", f"{f1:.6f}", support, f"{t:.2f}"))
    md, cs = Path(f"{path}.md"), Path(f"{path}.csv")
    fsutil.atomic_write_text(md, "\n".join(lines) + "\n")
    fsutil.atomic_write_text(cs, buf.getvalue())
    return [md, cs]


def write_task_report(
    report_dir: str | os.PathLike,
    *,
    task: str,
    names: Sequence[str],
    history: Sequence[Any] = (),
    metrics: Mapping[str, Any] | None = None,
    outputs: Any = None,
    targets: Any = None,
) -> list[Path]:
    """Write the report of a regression or multilabel model into ``report_dir``; returns the files written.

    ``outputs``/``targets`` are the best epoch's raw validation outputs and targets; without them only the
    curves and (multilabel) the table are written.
    """
    from dli_perception.core.training.targets import threshold_curves

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = dict(metrics or {})
    written: list[Path] = []
    metric_name = "mean_error" if task == tasks.REGRESSION else "macro_f1"
    if history:
        written.append(plot_task_curves(history, metric_name, report_dir / CURVES_FILE))
    have = outputs is not None and targets is not None and len(outputs)
    if task == tasks.REGRESSION:
        if have:
            pred = np.asarray(outputs, dtype=np.float64).reshape(-1, 2)
            true = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
            baseline = metrics.get("baseline_xy")
            written.append(plot_xy_scatter(pred, true, baseline, report_dir / SCATTER_FILE))
            written.append(plot_error_histogram(pred, true, baseline, report_dir / ERROR_HIST_FILE))
        return written
    if metrics.get("per_label"):
        written.extend(write_per_label_table(metrics["per_label"], report_dir / PER_LABEL_FILE))
    if have:
        scores = tasks.sigmoid(np.asarray(outputs, dtype=np.float64).reshape(-1, len(names)))
        curves = threshold_curves(scores, np.asarray(targets), list(names))
        written.append(plot_threshold_curves(curves, metrics.get("thresholds", {}), report_dir / THRESHOLD_FILE))
    return written
