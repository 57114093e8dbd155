"""``dli-perception export``: write a model directory from a checkpoint, or add precision variants to one.

``export CHECKPOINT --out MODEL_DIR`` exports a training checkpoint (``best.pt``) as a model
directory (replaced atomically), with its precision variants. ``export MODEL_DIR`` adds (or
rebuilds) the variants of an existing model directory in place: INT8 Q/DQ calibrated on the
training images and FP16, each checked against fp32 on the validation split; the directory's
files are replaced atomically and ``metadata.json`` last. ``--dataset`` points at the training
images when they are no longer where training read them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dli_perception.errors import ConfigError

VARIANT_NAMES = {"int8": "int8_qdq", "fp16": "fp16"}


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export",
        help="export a checkpoint as a model directory, or add precision variants to a model directory",
        description="CHECKPOINT --out MODEL_DIR: write MODEL_DIR (model.onnx checked against torch, INT8 Q/DQ and "
        "FP16 variants checked against fp32, labels.txt, metadata.json, checkpoint.pt, report/), replacing an "
        "existing one atomically. MODEL_DIR alone: add or rebuild its precision variants in place.",
    )
    e.add_argument(
        "source", type=Path, metavar="CHECKPOINT|MODEL_DIR", help="best.pt of a training run, or a model directory"
    )
    e.add_argument(
        "--out", "-o", type=Path, default=None, metavar="MODEL_DIR", help="model directory to write (for a checkpoint)"
    )
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    e.add_argument("--no-report", dest="report", action="store_false", help="skip the report/ plots")
    e.add_argument(
        "--variants",
        default="int8,fp16",
        help="precision variants to build: a comma list of int8, fp16, or 'none' (default: int8,fp16)",
    )
    e.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="training images (ImageFolder) to calibrate and check on; default: the dataset training recorded",
    )
    e.add_argument("--calibration-images", type=int, default=64, help="training images INT8 calibrates on (default 64)")
    e.add_argument(
        "--exporter",
        default="",
        choices=("", "auto", "dynamo", "torchscript"),
        help="ONNX exporter (default: $DLI_PERCEPTION_ONNX_EXPORTER or auto = dynamo, TorchScript where it fails)",
    )
    e.set_defaults(func=run)


def parse_variants(text: str) -> list[str]:
    """``int8,fp16`` -> ``["int8_qdq", "fp16"]``; ``none`` -> []; :class:`ConfigError` for anything else."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if items == ["none"]:
        return []
    unknown = [t for t in items if t not in VARIANT_NAMES]
    if unknown or not items:
        raise ConfigError(f"--variants takes a comma list of {sorted(VARIANT_NAMES)} or 'none', got {text!r}")
    return [VARIANT_NAMES[t] for t in dict.fromkeys(items)]


def run(args: argparse.Namespace) -> int:
    from dli_perception.commands.train_console import one_line_errors

    with one_line_errors():
        return _run(args)


def _print_variants(model_dir: Path, variants: dict) -> None:
    for name, info in variants.items():
        line = f"  {name:<9} {info.get('status', '?'):<9}"
        if info.get("status") == "accepted" and name != "fp32":
            line += f" {info.get('file')}: {info.get('reason', '')}"
        elif name == "fp32":
            acc, err = info.get("accuracy"), info.get("mean_error")
            line += f" {info.get('file')}" + (f" (validation accuracy {100 * acc:.1f} %)" if acc is not None else "")
            line += f" (validation mean XY error {err:.4f})" if err is not None else ""
        else:
            line += f" {info.get('reason', '')}"
        print(line)


def _run(args: argparse.Namespace) -> int:
    from dli_perception.core.export import DEFAULT_OPSET, export_model_dir
    from dli_perception.core.modeldir import METADATA_FILE, load_metadata
    from dli_perception.core.training import result_from_checkpoint
    from dli_perception.core.variant_build import add_variants, data_from_dataset

    variants = parse_variants(args.variants)
    if args.calibration_images < 1:
        raise ConfigError("--calibration-images must be >= 1")
    source = args.source.expanduser()
    if source.is_dir() and (source / METADATA_FILE).is_file():
        if args.out is not None:
            raise ConfigError("--out is for a checkpoint; a model directory gets its variants in place")
        if not variants:
            raise ConfigError("--variants none leaves nothing to do for a model directory")
        add_variants(source, dataset=args.dataset, which=variants, calibration_images=args.calibration_images)
        print(f"variants of {source}:")
        _print_variants(source, load_metadata(source).variants)
        return 0
    if args.out is None:
        raise ConfigError(f"{source} is not a model directory; exporting a checkpoint needs --out MODEL_DIR")
    result = result_from_checkpoint(source)
    out = args.out.expanduser()
    data = None
    if args.dataset is not None and variants:
        data = data_from_dataset(args.dataset.expanduser(), result.config, calibration_images=args.calibration_images)
    export_model_dir(
        result,
        out,
        opset=args.opset or DEFAULT_OPSET,
        report=args.report,
        allow_cancelled=True,
        exporter=args.exporter,
        variants=variants,
        variant_data=data,
    )
    print(
        f"exported {out}: "
        + (f"{len(result.classes)} classes " if result.task == "classification" else f"{result.task}, outputs ")
        + f"{result.classes}, epoch {result.best_epoch} "
        f"({result.headline()}) from {args.source}"
    )
    _print_variants(out, load_metadata(out).variants)
    return 0
