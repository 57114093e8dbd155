"""``dli-perception dataset info|check|split|merge|import-jetbot``: look at, repair, split, merge and import
datasets of every task (classification, regression, multi-label)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="show, check/repair, split, merge or import datasets")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    info = actions.add_parser(
        "info",
        help="the task, images per class or label, XY spread, formats and sizes (read-only)",
        description="Show a dataset: its task; images per class (classification), per label (multi-label), "
        "or the spread of the XY targets (regression: mean, std, min and max of x and y); formats and sizes.",
    )
    info.add_argument("dataset", help="dataset directory")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=run_info)

    check = actions.add_parser(
        "check",
        help="compare the manifest with the files and repair what a crash left",
        description="Compare manifest.jsonl with the image files: adopt images without a line, drop lines "
        "without a file, remove temp files, rename undecodable images to *.corrupt. Exit code 1 when "
        "something is wrong and was not repaired (--no-repair, or --verify found changed files).",
    )
    check.add_argument("dataset", help="dataset directory")
    check.add_argument("--no-repair", action="store_true", help="only report (opens the dataset read-only)")
    check.add_argument("--verify", action="store_true", help="also hash every file against the manifest (slow)")
    check.set_defaults(func=run_check)

    split = actions.add_parser(
        "split",
        help="the train/validation split training uses (stratified for classes), and the held-out files",
        description="Print the reproducible train/validation split that `dli-perception train` holds out with the "
        "same --val and --seed, then every held-out (validation) file. Classification is stratified per "
        "class; regression and multi-label images are split at random (seeded).",
    )
    split.add_argument("dataset", help="dataset directory")
    split.add_argument("--val", type=float, default=0.2, help="fraction of each class for validation (default 0.2)")
    split.add_argument("--seed", type=int, default=0, help="seed (same seed and images: same split)")
    split.add_argument("--out", help="write the split as JSON {train: [files], val: [files], ...} to this file")
    split.add_argument("--quiet", action="store_true", help="do not list the held-out files")
    split.set_defaults(func=run_split)

    merge = actions.add_parser(
        "merge",
        help="merge datasets of several robots into a new one (dedupe, provenance, conflicts)",
        description="Merge datasets into a new dataset at --out, written atomically (it appears whole or not at "
        "all). Identical images (same sha256 of the file) are stored once. Each manifest line records the "
        "image's robot (default: the input directory's name), bag, topic and stamp. Class names equal but "
        "for case are refused (map them with --rename); an image stored under different classes is left "
        "out and listed (--label-conflicts).",
    )
    merge.add_argument("inputs", nargs="+", metavar="DATASET", help="input dataset directories (read-only)")
    merge.add_argument("--out", required=True, help="new dataset directory (must not exist or be empty)")
    merge.add_argument("--force", action="store_true", help="replace a non-empty --out (atomically, at the end)")
    merge.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="merge class OLD into NEW (repeatable), e.g. --rename Cup=cup",
    )
    merge.add_argument(
        "--label-conflicts",
        choices=("drop", "first", "fail"),
        default="drop",
        help="an image under different classes: leave every copy out (default), keep the first input's "
        "class, or refuse the merge",
    )
    merge.add_argument("--json", action="store_true", help="print the report as one JSON object")
    merge.set_defaults(func=run_merge)

    jet = actions.add_parser(
        "import-jetbot",
        help="import a JetBot road-following folder (xy_<x>_<y>_<id>.jpg) as a regression dataset",
        description="Import the JetBot road-following layout as it is: image files named xy_<x>_<y>_<id>.jpg "
        "(whole pixel coordinates of the target in that image) directly in SRC or in its immediate "
        "sub-folders. Each target is normalised by its image's own size to [-1, 1] (centre 0, x right, "
        "y down). Files whose names do not parse are not imported; they are counted and listed. SRC is only "
        "read; DATASET is created if needed and must be empty or a regression dataset.",
    )
    jet.add_argument("src", metavar="SRC", help="folder holding the xy_*.jpg images")
    jet.add_argument("dataset", metavar="DATASET", help="dataset directory (created if needed)")
    jet.set_defaults(func=run_import_jetbot)


def run_info(args: argparse.Namespace) -> int:
    from dli_perception.core import tasks
    from dli_perception.core.dataset import DatasetStore
    from dli_perception.core.dataset.targets import describe, xy_spread

    with DatasetStore(args.dataset, readonly=True) as store:
        entries = store.entries
        counts = store.counts()
        report = store.repair_report
        root = store.root
        task = store.task
        vocabulary = store.label_vocabulary
    formats = Counter(Path(e.file).suffix.lower().lstrip(".") for e in entries)
    sizes = Counter(f"{e.width}x{e.height}" for e in entries)
    info = {
        "dataset": str(root),
        "task": task,
        "images": len(entries),
        "classes": counts,
        "formats": dict(formats.most_common()),
        "sizes": dict(sizes.most_common()),
        "consistent": report.clean,
        "problems": "" if report.clean else report.summary(),
    }
    if task == tasks.REGRESSION:
        info["xy"] = xy_spread(entries)
    if task == tasks.MULTILABEL:
        info["labels"] = counts
        info["no_labels"] = sum(1 for e in entries if not e.labels)
        info["vocabulary"] = list(vocabulary) if vocabulary is not None else None
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    print(f"dataset {root}: {describe(task, len(entries), counts)}" + (f", task {task}" if task else ""))
    if task == tasks.REGRESSION:
        for name, s in info["xy"].items():
            print(f"  {name}: mean {s['mean']:+.3f}  std {s['std']:.3f}  min {s['min']:+.3f}  max {s['max']:+.3f}")
    else:
        width = max((len(c) for c in counts), default=0)
        for label, n in counts.items():
            print(f"  {label:<{width}}  {n}")
    if task == tasks.MULTILABEL:
        print(f"images showing none of the labels: {info['no_labels']}")
        if vocabulary is not None:
            unused = [label for label in vocabulary if label not in counts]
            print(
                f"declared labels (labels.txt): {', '.join(vocabulary)}"
                + (f"; unused: {', '.join(unused)}" if unused else "")
            )
    print("formats: " + (", ".join(f"{k} {v}" for k, v in formats.most_common()) or "-"))
    print("sizes:   " + (", ".join(f"{k} {v}" for k, v in sizes.most_common(5)) or "-"))
    if not report.clean:
        print(f"problems: {report.summary()} (run: dli-perception dataset check {args.dataset})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from dli_perception.core.dataset import DatasetStore

    with DatasetStore(args.dataset, readonly=args.no_repair) as store:
        report = store.repair_report
        if args.verify:
            verified = store.check(repair=not store.readonly, verify=True)
            report.hash_mismatch = verified.hash_mismatch
        from dli_perception.core.dataset.targets import describe

        print(f"dataset {store.root}: {describe(store.task, len(store), store.counts())}")
        print(report.summary())
        if store.readonly and not args.no_repair:
            print(f"not repaired: {store.readonly_reason}", file=sys.stderr)
    if report.hash_mismatch:
        print("files changed since they were saved (listed above); check them or remove them", file=sys.stderr)
        return 1
    if report.no_target:
        print(
            f"{len(report.no_target)} images under xy/ or multilabel/ have no manifest line, so their targets are "
            "unknown; they were left in place and are not used",
            file=sys.stderr,
        )
        return 1
    return 0 if report.clean or report.applied else 1


def run_split(args: argparse.Namespace) -> int:
    from dli_perception.core.dataset import DatasetStore
    from dli_perception.core.fsutil import atomic_write_text

    with DatasetStore(args.dataset, readonly=True) as store:
        train, val = store.split(val_fraction=args.val, seed=args.seed)
        root = store.root
        task = store.task
    n_train, n_val = _per_target(train), _per_target(val)
    what = f", task {task}" if task else ""
    print(f"dataset {root}: {len(train)} train, {len(val)} validation (val {args.val:g}, seed {args.seed}{what})")
    for label in sorted(set(n_train) | set(n_val)):
        print(f"  {label}: {n_train[label]} train, {n_val[label]} val")
    if not args.quiet:
        print(f"held out for validation ({len(val)} files):")
        for entry in val:
            print(f"  {entry.file}  {_target_text(entry)}")
    if args.out:
        data = {
            "dataset": str(root),
            "task": task,
            "val_fraction": args.val,
            "seed": args.seed,
            "train": [e.file for e in train],
            "val": [e.file for e in val],
        }
        atomic_write_text(args.out, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _per_target(entries) -> Counter[str]:
    """Images per class (or ``xy``), or per label for multi-label entries."""
    return Counter(label for e in entries for label in (e.labels if e.labels is not None else (e.label,)))


def _target_text(entry) -> str:
    if entry.xy is not None:
        return f"x {entry.xy[0]:+.4f} y {entry.xy[1]:+.4f}"
    if entry.labels is not None:
        return "labels " + (",".join(entry.labels) or "(none)")
    return entry.label


def run_import_jetbot(args: argparse.Namespace) -> int:
    import threading

    from dli_perception.commands.bag import INTERRUPTED, _run_interruptible
    from dli_perception.commands.progress import ProgressBar
    from dli_perception.core.dataset import DatasetStore, import_jetbot

    with DatasetStore(args.dataset) as store:
        with ProgressBar(None, "import-jetbot", unit="img") as bar:
            stats, interrupted = _run_interruptible(
                lambda stop: import_jetbot(store, args.src, progress=bar.update_to, stop_event=stop), threading.Event()
            )
        counts, root = store.counts(), store.root
    print(f"{args.src} -> {root}")
    print(stats.summary())
    print(f"dataset now holds {counts.get('xy', 0)} regression images")
    if interrupted or stats.cancelled:
        print("interrupted: the images imported so far are kept and the dataset is consistent", file=sys.stderr)
        return INTERRUPTED
    left_out = len(stats.bad_names) + len(stats.corrupt_files)
    if stats.images == 0:
        print(f"no image files in {args.src} (expected xy_<x>_<y>_<id>.jpg files)", file=sys.stderr)
        return 1
    if left_out:
        print(
            f"warning: {left_out} files were not imported (listed above); the source is unchanged: rename or "
            "fix them and run again (images already imported are skipped as duplicates)",
            file=sys.stderr,
        )
        return 1 if stats.saved + stats.duplicates == 0 else 0
    return 0


def run_merge(args: argparse.Namespace) -> int:
    import threading

    from dli_perception.commands.bag import INTERRUPTED, _run_interruptible
    from dli_perception.commands.progress import ProgressBar
    from dli_perception.core.merge import merge_datasets, parse_renames

    rename = parse_renames(args.rename)
    with ProgressBar(None, "merge", unit="img") as bar:

        def work(stop: threading.Event):
            return merge_datasets(
                args.inputs,
                args.out,
                overwrite=args.force,
                rename=rename,
                label_conflicts=args.label_conflicts,
                progress=bar.update_to,
                stop_event=stop,
            )

        report, interrupted = _run_interruptible(work, threading.Event())
    if interrupted or report is None or report.cancelled:
        print(f"interrupted: {args.out} was not written", file=sys.stderr)
        return INTERRUPTED
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.summary())
    return 0
