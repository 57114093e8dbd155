"""``dli-perception dataset info|check|split|merge``: look at, repair, split and merge recorded datasets."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="show, check/repair, split or merge datasets")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    info = actions.add_parser("info", help="images per class, formats and sizes (read-only)")
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

    split = actions.add_parser("split", help="stratified, reproducible train/validation split")
    split.add_argument("dataset", help="dataset directory")
    split.add_argument("--val", type=float, default=0.2, help="fraction of each class for validation (default 0.2)")
    split.add_argument("--seed", type=int, default=0, help="seed (same seed and images: same split)")
    split.add_argument("--out", help="write the split as JSON {train: [files], val: [files], ...} to this file")
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


def run_info(args: argparse.Namespace) -> int:
    from dli_perception.core.dataset import DatasetStore

    with DatasetStore(args.dataset, readonly=True) as store:
        entries = store.entries
        counts = store.counts()
        report = store.repair_report
        root = store.root
    formats = Counter(Path(e.file).suffix.lower().lstrip(".") for e in entries)
    sizes = Counter(f"{e.width}x{e.height}" for e in entries)
    info = {
        "dataset": str(root),
        "images": len(entries),
        "classes": counts,
        "formats": dict(formats.most_common()),
        "sizes": dict(sizes.most_common()),
        "consistent": report.clean,
        "problems": "" if report.clean else report.summary(),
    }
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    print(f"dataset {root}: {len(entries)} images in {len(counts)} classes")
    width = max((len(c) for c in counts), default=0)
    for label, n in counts.items():
        print(f"  {label:<{width}}  {n}")
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
        print(f"dataset {store.root}: {len(store)} images in {len(store.counts())} classes")
        print(report.summary())
        if store.readonly and not args.no_repair:
            print(f"not repaired: {store.readonly_reason}", file=sys.stderr)
    if report.hash_mismatch:
        print("files changed since they were saved (listed above); check them or remove them", file=sys.stderr)
        return 1
    return 0 if report.clean or report.applied else 1


def run_split(args: argparse.Namespace) -> int:
    from dli_perception.core.dataset import DatasetStore
    from dli_perception.core.fsutil import atomic_write_text

    with DatasetStore(args.dataset, readonly=True) as store:
        train, val = store.split(val_fraction=args.val, seed=args.seed)
        root = store.root
    n_train = Counter(e.label for e in train)
    n_val = Counter(e.label for e in val)
    print(f"dataset {root}: {len(train)} train, {len(val)} validation (val {args.val:g}, seed {args.seed})")
    for label in sorted(set(n_train) | set(n_val)):
        print(f"  {label}: {n_train[label]} train, {n_val[label]} val")
    if args.out:
        data = {
            "dataset": str(root),
            "val_fraction": args.val,
            "seed": args.seed,
            "train": [e.file for e in train],
            "val": [e.file for e in val],
        }
        atomic_write_text(args.out, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {args.out}")
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
