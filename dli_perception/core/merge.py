"""Merge datasets recorded by several robots into one store: dedupe, provenance, conflicts, atomic.

Rules (what ``dli-perception dataset merge`` does):

* **Dedupe by content.** An image is identified by the sha256 of its file bytes (recomputed, not
  trusted from the manifest). The same bytes under the same class in several inputs are stored
  once, with the provenance of the first input that has them (inputs in the order given).
* **Provenance.** Every merged manifest line carries ``robot``, ``bag``, ``topic`` and
  ``stamp_ns``. Missing fields are filled from what is known: the robot defaults to the input
  dataset's directory name; ``bag`` and ``topic`` are read from older ``source`` values of the
  form ``<bag>:<topic>`` (written by earlier bag conversions).
* **Label conflicts.** The same bytes under two different classes (one robot's operator said
  ``free``, another's ``blocked``): the image is ambiguous, so by default *every* copy is left
  out and listed in the report (``label_conflicts="drop"``); ``"first"`` keeps the first input's
  class, ``"fail"`` refuses the merge.
* **Class-name conflicts.** Class names that differ only by case (``Cup`` and ``cup``) would train
  as two classes of one thing; the merge is refused and lists them, unless ``rename`` maps one onto
  the other (``{"Cup": "cup"}``; renames apply before everything else).
* **Atomic.** The result is built in a hidden directory beside ``out`` and renamed into place:
  ``out`` appears whole or not at all. A non-empty ``out`` is refused unless ``overwrite``; it is
  then replaced in one rename, after the new dataset is complete.

* **Tasks.** All inputs must hold the same task (classification, regression or multi-label; empty
  inputs hold none): merging datasets of different tasks is refused (:class:`MergeError`). For
  regression and multi-label datasets the "class" above is the image's target: its XY point or its
  label set; ``rename`` maps label names inside label sets, and the label vocabularies the inputs
  declare (``labels.txt``) are united into the result's.

Inputs are opened read-only (never repaired); files listed but missing are skipped and counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.core import fsutil, tasks
from dli_perception.core.dataset import (
    DatasetStore,
    EncodedImage,
    ManifestEntry,
    encode_image,
    probe_image,
    validate_label,
)
from dli_perception.core.dataset.targets import target_key
from dli_perception.core.imagefiles import decode_rgb
from dli_perception.core.progress import ProgressCallback
from dli_perception.errors import ConfigError, DatasetError, MergeError

logger = logging.getLogger(__name__)

LABEL_CONFLICT_POLICIES = ("drop", "first", "fail")


@dataclass
class MergeReport:
    """What :func:`merge_datasets` did. ``label_conflicts``: ``{sha256: [(input, file, class), ...]}``;
    ``case_conflicts``: groups of class names equal but for case."""

    out: str
    inputs: list[str]
    images_in: int = 0
    written: int = 0
    duplicates: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    label_conflicts: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    label_conflict_policy: str = "drop"
    dropped_conflicting: int = 0
    case_conflicts: list[list[str]] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    robots: dict[str, int] = field(default_factory=dict)
    task: str | None = None
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def summary(self) -> str:
        """A few lines for people."""
        per = {"regression": "targets: ", "multilabel": "per label: "}.get(self.task or "", "per class: ")
        lines = [
            f"merged {len(self.inputs)} datasets into {self.out}: {self.written} images written of "
            f"{self.images_in} read; {self.duplicates} duplicates stored once"
            + (f" (task {self.task})" if self.task else ""),
            per + (", ".join(f"{k} {v}" for k, v in self.counts.items()) or "-"),
            "per robot: " + (", ".join(f"{k} {v}" for k, v in self.robots.items()) or "-"),
        ]
        if self.renamed:
            lines.append("renamed: " + ", ".join(f"{a} -> {b}" for a, b in self.renamed.items()))
        if self.label_conflicts:
            what = {
                "drop": f"left out ({self.dropped_conflicting} files)",
                "first": "kept under the first input's class",
                "fail": "refused",
            }[self.label_conflict_policy]
            lines.append(f"label conflicts: {len(self.label_conflicts)} images carry different classes; {what}:")
            for sha, places in list(self.label_conflicts.items())[:10]:
                lines.append(f"  {sha[:12]}: " + "; ".join(f"{src}/{file} ({label})" for src, file, label in places))
            if len(self.label_conflicts) > 10:
                lines.append(f"  ... and {len(self.label_conflicts) - 10} more")
        if self.missing:
            lines.append(f"missing files skipped: {len(self.missing)} ({', '.join(self.missing[:5])})")
        if self.changed:
            lines.append(
                f"files whose content no longer matches their manifest hash (merged by their real content): "
                f"{len(self.changed)} ({', '.join(self.changed[:5])})"
            )
        return "\n".join(lines)


@dataclass
class _Item:
    src: int
    entry: ManifestEntry
    path: Path
    label: str
    sha256: str

    @property
    def target(self) -> str:
        """The image's target as text (class, XY point or label set): equal texts, equal targets."""
        return target_key(self.entry) if self.entry.task != tasks.CLASSIFICATION else self.label


def parse_renames(pairs: Sequence[str]) -> dict[str, str]:
    """``["Cup=cup", ...]`` -> ``{"Cup": "cup"}``; :class:`ConfigError` on bad syntax or names."""
    out: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ConfigError(f"bad --rename {pair!r}: use OLD=NEW, e.g. --rename Cup=cup")
        out[old.strip()] = validate_label(new)
    return out


def _provenance(entry: ManifestEntry, default_robot: str) -> dict[str, str]:
    bag, topic = entry.bag, entry.topic
    if not (bag or topic) and ":" in entry.source and not entry.source.startswith("import:"):
        head, _, tail = entry.source.partition(":")
        if tail.startswith("/"):
            bag, topic = head, tail
    return {"robot": entry.robot or default_robot, "bag": bag, "topic": topic}


def _encoded(path: Path, data: bytes, entry: ManifestEntry, sha: str) -> EncodedImage:
    """The stored file's bytes as they are (JPEG/PNG), or re-encoded as PNG for other formats."""
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg", ".png"):
        width, height = entry.width, entry.height
        if not (width and height):
            _, width, height = probe_image(data)
        return EncodedImage(data, ".png" if ext == ".png" else ".jpg", width, height, sha)
    rgb = decode_rgb(data)
    if rgb is None:
        raise DatasetError(f"{path} does not decode; run `dli-perception dataset check` on its dataset")
    return encode_image(rgb, "png")


def _collect(
    inputs: Sequence[Path], rename: Mapping[str, str], report: MergeReport
) -> tuple[list[_Item], list[str], set[str] | None]:
    """Read every input's manifest (read-only) and hash its files; returns the items, robot defaults and
    the united declared label vocabulary (None when no input declares one)."""
    items: list[_Item] = []
    robots: list[str] = []
    task_of_input: dict[str, str] = {}
    vocabulary: set[str] | None = None
    for i, src in enumerate(inputs):
        with DatasetStore(src, readonly=True) as store:
            if not store.repair_report.clean:
                logger.warning("merge: input %s: %s", store.root, store.repair_report.summary())
            if store.task is not None:
                task_of_input[str(src)] = store.task
            if len(set(task_of_input.values())) > 1:
                shown = ", ".join(f"{name} ({task})" for name, task in task_of_input.items())
                raise MergeError(
                    f"the inputs hold different tasks: {shown}; a dataset holds one task, so merge only datasets "
                    "of the same task; nothing was written"
                )
            if store.label_vocabulary is not None:
                vocabulary = (vocabulary or set()) | {rename.get(x, x) for x in store.label_vocabulary}
            robots.append(store.root.name)
            for entry in store.entries:
                path = store.path_of(entry)
                report.images_in += 1
                try:
                    sha = fsutil.sha256_file(path)
                except OSError:
                    report.missing.append(f"{src}/{entry.file}")
                    continue
                if entry.sha256 and sha != entry.sha256:
                    report.changed.append(f"{src}/{entry.file}")
                if entry.labels is not None:
                    entry = dataclasses.replace(entry, labels=tuple(sorted({rename.get(x, x) for x in entry.labels})))
                    label = entry.label
                elif entry.xy is not None:
                    label = entry.label
                else:
                    label = rename.get(entry.label, entry.label)
                items.append(_Item(i, entry, path, label, sha))
    report.task = next(iter(task_of_input.values()), None)
    return items, robots, vocabulary


def _check_case(labels: set[str], report: MergeReport) -> None:
    groups: dict[str, set[str]] = defaultdict(set)
    for label in labels:
        groups[label.casefold()].add(label)
    report.case_conflicts = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    if report.case_conflicts:
        shown = "; ".join(" / ".join(g) for g in report.case_conflicts)
        first = report.case_conflicts[0]
        raise MergeError(
            f"class names differ only by case: {shown}. They would train as separate classes; map them onto "
            f"one name with --rename (e.g. --rename {first[0]}={first[-1]}) and merge again; nothing was written"
        )


def _check_paths(srcs: Sequence[Path], out: Path, overwrite: bool) -> None:
    """:class:`MergeError` unless every input is a distinct directory other than ``out``, and ``out`` is free."""
    for src in srcs:
        if not src.is_dir():
            raise MergeError(f"input dataset {src} does not exist or is not a directory")
        if out.exists() and src.resolve() == out.resolve():
            raise MergeError(f"{src} is both an input and --out; write the merge to a new directory")
    if len({s.resolve() for s in srcs}) != len(srcs):
        raise MergeError("an input dataset is named twice; name each once")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise MergeError(f"{out} exists and is not empty; choose a new directory or pass --force to replace it")


def _choose(items: list[_Item], srcs: Sequence[Path], label_conflicts: str, report: MergeReport) -> list[_Item]:
    """One item per content (the first seen), applying the label-conflict policy; counts go to ``report``."""
    by_sha: dict[str, list[_Item]] = defaultdict(list)
    for item in items:
        by_sha[item.sha256].append(item)
    conflicting = {sha for sha, group in by_sha.items() if len({it.target for it in group}) > 1}
    report.label_conflicts = {
        sha: [(str(srcs[it.src]), it.entry.file, it.target) for it in by_sha[sha]] for sha in sorted(conflicting)
    }
    if conflicting and label_conflicts == "fail":
        raise MergeError(
            f"{len(conflicting)} images appear under different classes in the inputs (e.g. "
            f"{'; '.join(f'{s}/{f} ({lbl})' for s, f, lbl in next(iter(report.label_conflicts.values())))}); "
            "fix their labels or merge with --label-conflicts drop|first; nothing was written"
        )
    keep: list[_Item] = []
    for sha, group in by_sha.items():  # first-seen order: inputs in the order given, then manifest order
        if sha in conflicting and label_conflicts == "drop":
            report.dropped_conflicting += len(group)
            continue
        keep.append(group[0])
        report.duplicates += len(group) - 1
    return keep


def merge_datasets(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    rename: Mapping[str, str] | None = None,
    label_conflicts: str = "drop",
    image_format: str = "jpg",
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> MergeReport:
    """Merge ``inputs`` (dataset directories) into a new dataset at ``out``; see the module rules.

    Raises :class:`MergeError` (no inputs, an input missing or equal to ``out``, ``out`` not
    empty without ``overwrite``, class names equal but for case, a label conflict with ``"fail"``),
    :class:`DatasetError` (unreadable input, disk full). On every error and on cancel (``stop_event``)
    ``out`` is left as it was.
    """
    if label_conflicts not in LABEL_CONFLICT_POLICIES:
        raise ConfigError(f"label_conflicts must be one of {LABEL_CONFLICT_POLICIES}, got {label_conflicts!r}")
    if not inputs:
        raise MergeError("no input datasets given; name at least one dataset directory")
    out = Path(out).expanduser()
    srcs = [Path(p).expanduser() for p in inputs]
    _check_paths(srcs, out, overwrite)
    rename = {str(k).strip(): validate_label(v) for k, v in (rename or {}).items()}
    report = MergeReport(out=str(out), inputs=[str(s) for s in srcs], label_conflict_policy=label_conflicts)
    report.renamed = dict(rename)

    items, default_robots, vocabulary = _collect(srcs, rename, report)
    for item in items:
        item.label = validate_label(item.label)
    if report.task == tasks.MULTILABEL:
        used = {label for it in items for label in it.entry.labels or ()}
        _check_case(used | (vocabulary or set()), report)
        if vocabulary is not None:
            vocabulary |= used
    else:
        _check_case({it.label for it in items}, report)
    keep = _choose(items, srcs, label_conflicts, report)

    def build(tmp: Path) -> None:
        known = sorted(vocabulary) if vocabulary else None
        with DatasetStore(tmp, image_format=image_format, dedupe=True, known_labels=known) as store, store.batch():
            for done, item in enumerate(keep, 1):
                if stop_event is not None and stop_event.is_set():
                    report.cancelled = True
                    raise _Cancelled
                data = item.path.read_bytes()
                encoded = _encoded(item.path, data, item.entry, item.sha256)
                prov = _provenance(item.entry, default_robots[item.src])
                target = (
                    {"xy": item.entry.xy}
                    if item.entry.xy is not None
                    else {"labels": item.entry.labels}
                    if item.entry.labels is not None
                    else {"label": item.label}
                )
                store.add_encoded(encoded, stamp_ns=item.entry.stamp_ns, source=item.entry.source, **target, **prov)
                report.robots[prov["robot"]] = report.robots.get(prov["robot"], 0) + 1
                if progress is not None:
                    progress(done, len(keep))
            report.counts = store.counts()
            report.written = len(store)

    try:
        fsutil.replace_dir(build, out)
    except _Cancelled:
        return report
    except OSError as err:
        raise DatasetError(f"cannot write the merged dataset {out}: {err}; {out} was left as it was") from None
    with contextlib.suppress(OSError):
        os.chmod(out, 0o755)  # mkdtemp made it private
    report.robots = dict(sorted(report.robots.items()))
    logger.info("%s", report.summary().replace("\n", "; "))
    return report


class _Cancelled(Exception):
    """Raised inside the build to abandon the temp directory."""
