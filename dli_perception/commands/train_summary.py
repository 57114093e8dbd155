"""The text ``dli-perception train`` prints at the end of a run: per-epoch table, best epoch, per-class or
per-task metrics, where the outputs are, and the time spent (:func:`summary_lines`, :func:`print_summary`).

:mod:`dli_perception.commands.train` re-exports these names; the progress bars use :func:`format_seconds`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def format_seconds(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Plain text table: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_lines(result, model_dir: Path | None) -> list[str]:
    """The end-of-run summary of a :class:`TrainResult` as lines of text."""
    from dli_perception.core.modeldir import REPORT_DIR
    from dli_perception.core.report import CONFUSION_FILE, CURVES_FILE, PER_CLASS_FILE

    lines = [""]
    task = getattr(result, "task", "classification")
    classification = task == "classification"
    rows = [
        [
            str(h.epoch),
            h.stage,
            _num(h.train_loss),
            _pct(h.train_acc) if classification else _num(h.train_acc),
            _num(h.val_loss),
            _pct(h.val_acc) if classification else _num(h.val_metric),
            f"{h.time_s:.2f}",
            "best" if h.epoch == result.best_epoch else ("*" if h.improved else ""),
        ]
        for h in result.history
    ]
    train_col, val_col = {
        "classification": ("train acc", "val acc"),
        "regression": ("train error", "val error"),
        "multilabel": ("train exact", "val macro F1"),
    }[task]
    headers = ["epoch", "stage", "train loss", train_col, "val loss", val_col, "time s", ""]
    lines += _table(headers, rows, left=2) if rows else ["no epoch was completed"]
    lines.append("")
    if result.best_epoch:
        lines.append(
            f"best epoch {result.best_epoch}: {result.headline()}, "
            f"loss {_num(result.best_val_loss)} ({result.status}, {len(result.history)} epochs run)"
        )
    per_label = result.metrics.get("per_label") if not classification else None
    if per_label:
        lines.append("")
        lines += _table(
            ["label", "precision", "recall", "F1", "support", "threshold"],
            [
                [
                    n,
                    _num(m["precision"], 3),
                    _num(m["recall"], 3),
                    _num(m["f1"], 3),
                    str(m["support"]),
                    _num(m["threshold"], 2),
                ]
                for n, m in per_label.items()
            ],
        )
    if task == "regression" and result.metrics:
        m = result.metrics
        lines.append(
            f"validation: MAE x {_num(m.get('mae_x'), 3)}, y {_num(m.get('mae_y'), 3)}, RMSE {_num(m.get('rmse'), 3)}, "
            f"error / mean-target baseline {_num(m.get('error_vs_baseline'), 3)}"
        )
    if result.per_class:
        lines.append("")
        lines += _table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [
                    name,
                    _num(m["precision"], 3),
                    _num(m["recall"], 3),
                    _num(m["f1"], 3),
                    str(int(m["support"])),
                ]
                for name, m in result.per_class.items()
            ],
        )
    ds = result.dataset
    lines.append("")
    if classification:
        lines.append(
            f"dataset {ds.root}: {ds.num_images} images in {len(ds.classes)} classes "
            f"({sum(ds.train_counts.values())} training, {sum(ds.val_counts.values())} validation)"
        )
    else:  # multilabel counts are positives per label: give the image counts
        n_val = int(result.metrics.get("images") or 0)
        lines.append(
            f"dataset {ds.root} ({task}): {ds.num_images} images, outputs {', '.join(ds.classes)} "
            f"({ds.num_images - n_val} training, {n_val} validation)"
        )
    if ds.skipped:
        shown = ", ".join(f"{s['file']} ({s['reason']})" for s in ds.skipped[:5])
        more = f" and {len(ds.skipped) - 5} more" if len(ds.skipped) > 5 else ""
        lines.append(f"skipped {len(ds.skipped)} unreadable image(s): {shown}{more}")
    lines.append(f"weights: {result.weights.describe()}")
    lines.append(_timing_line(result.timings))
    if model_dir is not None:
        report = model_dir / REPORT_DIR
        if classification:
            files = [f for f in (CURVES_FILE, CONFUSION_FILE, f"{PER_CLASS_FILE}.md") if (report / f).is_file()]
        else:
            files = sorted(f.name for f in report.iterdir() if f.suffix != ".csv") if report.is_dir() else []
        lines.append(f"model: {model_dir} (model.onnx, labels.txt, metadata.json, checkpoint.pt)")
        lines.append(f"report: {report}/ " + ", ".join(files) if files else f"report: {report}/")
    if result.checkpoint_path:
        lines.append(f"best checkpoint: {result.checkpoint_path}")
    return lines


def _timing_line(timings: Mapping[str, Any]) -> str:
    parts = [f"time {format_seconds(timings.get('total_s'))}"]
    if timings.get("features_s"):
        parts.append(f"feature cache {timings['features_s']:.2f} s")
    for stage, seconds in (timings.get("epoch_mean_s") or {}).items():
        parts.append(f"{stage} epoch {seconds:.3f} s")
    parts.append(f"on {timings.get('device', '?')}" + (" with AMP" if timings.get("amp") else ""))
    return ", ".join(parts)


def print_summary(result, model_dir: Path | None, file=None) -> None:
    """Print :func:`summary_lines` to ``file`` (stdout by default)."""
    print("\n".join(summary_lines(result, model_dir)), file=file or sys.stdout, flush=True)
