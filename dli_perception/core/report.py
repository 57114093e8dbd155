"""Training report for people: learning curves, confusion matrix (PNG) and a per-class table.

matplotlib is imported lazily and used through its Agg canvas directly (no pyplot, no global
backend switch), so this works headless, in threads and inside a ROS node. Every file is
written atomically.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core import fsutil
from dli_perception.errors import ConfigError

logger = logging.getLogger(__name__)

CURVES_FILE = "training_curves.png"
CONFUSION_FILE = "confusion_matrix.png"
PER_CLASS_FILE = "per_class"  # .md and .csv


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    fsutil.atomic_write_bytes(path, buf.getvalue())
    return path


def _as_dict(entry: Any) -> dict[str, Any]:
    if isinstance(entry, Mapping):
        return dict(entry)
    if hasattr(entry, "to_dict"):
        return entry.to_dict()
    raise ConfigError(f"history entries must be dicts or EpochStats, got {type(entry).__name__}")


def plot_training_curves(history: Sequence[Any], path: str | os.PathLike) -> Path:
    """Loss and accuracy per epoch, training vs validation, as a PNG; stage changes are marked.

    ``history`` holds :class:`~dli_perception.core.training.EpochStats` or their dicts
    (``epoch``, ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``, optional ``stage``).
    Raises :class:`ConfigError` for an empty history.
    """
    rows = [_as_dict(h) for h in history]
    if not rows:
        raise ConfigError("cannot plot training curves of an empty history")
    epochs = [int(r["epoch"]) for r in rows]
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
    ax_loss.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["val_acc"] for r in rows], "s-", label="validation")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="%", ylim=(0, 102))
    best = max(rows, key=lambda r: (r["val_acc"], -r["val_loss"]))
    ax_acc.axvline(best["epoch"], color="grey", linestyle=":", label=f"best (epoch {best['epoch']})")
    for prev, cur in itertools.pairwise(rows):
        if prev.get("stage") != cur.get("stage"):
            for ax in (ax_loss, ax_acc):
                ax.axvline(cur["epoch"] - 0.5, color="black", linestyle="--", linewidth=0.8)
            ax_acc.annotate(str(cur.get("stage", "")), (cur["epoch"] - 0.5, 3), fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_confusion_matrix(confusion: Any, classes: Sequence[str], path: str | os.PathLike) -> Path:
    """Confusion matrix as a PNG: colour = row-normalised rate (recall), text = counts.

    Rows are true classes, columns predictions. Raises :class:`ConfigError` when the matrix is not
    ``len(classes)`` square.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    if cm.shape != (n, n):
        raise ConfigError(f"confusion matrix has shape {cm.shape} but there are {n} classes")
    rows = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    side = min(16.0, 2.5 + 0.7 * n)
    fig = _figure(side + 1.5, side)
    ax = fig.subplots()
    image = ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({int(cm.sum())} images)")
    fontsize = 10 if n <= 8 else 7
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{100 * rate[i, j]:.0f}%",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if rate[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    return _save_png(fig, path)


def write_per_class_table(metrics: Mapping[str, Mapping[str, float]], path: str | os.PathLike) -> list[Path]:
    """Per-class precision, recall, F1 and support as ``<path>.md`` (markdown) and ``<path>.csv``.

    ``path`` may carry a ``.md`` or ``.csv`` suffix or none; both files are written. Returns their paths.
    """
    path = Path(path)
    if path.suffix in (".md", ".csv"):
        path = path.with_suffix("")
    columns = ("precision", "recall", "f1", "support")
    lines = ["| class | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("class", *columns))
    for name, m in metrics.items():
        values = [float(m.get(c, 0.0)) for c in columns[:3]]
        support = int(m.get("support", 0))
        cell = str(name).replace("|", "\\|")
        lines.append(f"| {cell} | {values[0]:.3f} | {values[1]:.3f} | {values[2]:.3f} | {support} |")
        writer.writerow((name, *(f"{v:.6f}" for v in values), support))
    md_path, csv_path = Path(f"{path}.md"), Path(f"{path}.csv")
    fsutil.atomic_write_text(md_path, "\n".join(lines) + "\n")
    fsutil.atomic_write_text(csv_path, buf.getvalue())
    return [md_path, csv_path]


def write_report(
    report_dir: str | os.PathLike,
    *,
    classes: Sequence[str],
    history: Sequence[Any] = (),
    confusion: Any = None,
    per_class: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Path]:
    """Write every part of the report that the inputs allow into ``report_dir``; returns the files written."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if history:
        written.append(plot_training_curves(history, report_dir / CURVES_FILE))
    if confusion is not None and len(confusion):
        written.append(plot_confusion_matrix(confusion, classes, report_dir / CONFUSION_FILE))
    if per_class:
        written.extend(write_per_class_table(per_class, report_dir / PER_CLASS_FILE))
    return written
