"""``dli-perception classify``: run a model directory on image files or folders, offline.

Prints one line per image, by the model's task:

- classification: ``FILE<TAB>LABEL<TAB>SCORE`` (``--top-k`` adds ``LABEL:SCORE`` columns);
- regression: ``FILE<TAB>X<TAB>Y`` (normalised target, image centre 0, x right, y down);
- multilabel: ``FILE<TAB>ACTIVE<TAB>LABEL:SCORE ...`` (active labels comma-separated, ``-`` for none;
  every label's sigmoid score).

``--json`` prints one JSON object per line instead (``task`` plus ``label``/``score``/``top``,
``x``/``y``, or ``labels``/``scores``/``thresholds``). The preprocessing and decoding are the ones
the classifier node uses (the model's PreprocessConfig, :func:`~dli_perception.core.tasks.decode_xy`,
:func:`~dli_perception.core.tasks.decode_multilabel` at the model's thresholds). Files that cannot be
decoded are reported on stderr and skipped; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.backends.select import CHOICES
from dli_perception.core.variants import PRECISION_CHOICES
from dli_perception.errors import ConfigError

log = logging.getLogger(__name__)

PROGRESS_MIN_FILES = 20
"""Show a progress bar (on stderr) from this many images on."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="run a model directory on image files or folders (class, XY target or label set)",
        description="Print the top class and its probability (classification), the x y target (regression) or "
        "the active labels and every label's score (multilabel) for every image.",
    )
    p.add_argument("model_dir", type=Path, help="model directory (model.onnx, labels.txt, metadata.json)")
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--backend", default="auto", choices=CHOICES, help="inference backend (default: auto)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU inference threads, 0 = library default")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help="precision variant (default: auto = the fastest one the model directory holds that passed its check)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per inference call (default: 8)")
    p.add_argument("--top-k", type=int, default=1, help="also print the next classes (default: 1)")
    p.add_argument("-r", "--recursive", action="store_true", help="look for images in sub-folders too")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=run)


def find_images(paths: Sequence[Path], recursive: bool = False) -> list[Path]:
    """Image files named by ``paths``: files as given, folders scanned for image extensions (sorted).

    Raises :class:`ConfigError` for a path that does not exist or when no image is found.
    """
    from dli_perception.core.imagefiles import IMAGE_EXTENSIONS

    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            found.extend(
                sorted(
                    f
                    for f in candidates
                    if f.is_file()
                    and f.suffix.lower() in IMAGE_EXTENSIONS
                    and not any(part.startswith(".") for part in f.relative_to(path).parts)
                )
            )
        else:
            raise ConfigError(f"{path} does not exist; give image files or folders of images")
    if not found:
        raise ConfigError(
            f"no images found in {', '.join(map(str, paths))}"
            + ("" if recursive else " (use --recursive for sub-folders)")
        )
    return found


def _batches(files: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(files), size):
        yield files[start : start + size]


def run(args: argparse.Namespace) -> int:
    from dli_perception.core.backend_options import BackendOptions
    from dli_perception.core.imagefiles import decode_rgb

    if args.batch_size < 1 or args.top_k < 1 or args.threads < 0:
        raise ConfigError("--batch-size and --top-k must be >= 1 and --threads >= 0")
    files = find_images(args.paths, args.recursive)
    precision = args.precision if args.backend != "torch" else ""  # the torch backend runs the fp32 checkpoint only
    options = BackendOptions(backend=args.backend, device=args.device, threads=args.threads, precision=precision)
    backend, selection = options.load(args.model_dir)
    classes = backend.classes
    top_k = min(args.top_k, len(classes))
    what = f"{len(classes)} classes" if backend.task == tasks.CLASSIFICATION else f"{backend.task} {classes}"
    print(f"model {args.model_dir}: {what}; {selection.summary()}", file=sys.stderr)
    failed = 0
    bar = None
    if len(files) >= PROGRESS_MIN_FILES:
        from dli_perception.commands.progress import ProgressBar

        bar = ProgressBar(len(files), "classify", unit="img")
    done = 0
    try:
        for batch in _batches(files, args.batch_size):
            images, names = [], []
            for f in batch:
                try:
                    image = decode_rgb(f.read_bytes())
                except OSError as exc:
                    image, reason = None, str(exc)
                else:
                    reason = "not a decodable image"
                if image is None:
                    failed += 1
                    print(f"{f}: error: {reason}", file=sys.stderr)
                    continue
                images.append(image)
                names.append(f)
            if images:
                for f, pred in zip(names, backend.predict(images), strict=True):
                    if backend.task == tasks.CLASSIFICATION:
                        _print_result(f, pred.probs, classes, top_k, args.json)
                    elif backend.task == tasks.REGRESSION:
                        _print_xy(f, pred, args.json)
                    else:
                        _print_label_set(f, pred, args.json)
            done += len(batch)
            if bar is not None:
                bar.update_to(done)
    finally:
        if bar is not None:
            bar.close()
        backend.close()
    if failed:
        print(f"{failed} of {len(files)} files could not be classified", file=sys.stderr)
    return 1 if failed else 0


def _print_result(path: Path, probs: np.ndarray, classes: Sequence[str], top_k: int, as_json: bool) -> None:
    order = np.argsort(-probs, kind="stable")[:top_k]
    top = [(classes[i], float(probs[i])) for i in order]
    if as_json:
        print(
            json.dumps(
                {
                    "file": str(path),
                    "label": top[0][0],
                    "score": round(top[0][1], 6),
                    "top": [{"label": c, "score": round(p, 6)} for c, p in top],
                }
            )
        )
    else:
        extra = "".join(f"\t{c}:{p:.4f}" for c, p in top[1:])
        print(f"{path}\t{top[0][0]}\t{top[0][1]:.4f}{extra}")
    sys.stdout.flush()


def _print_xy(path: Path, xy: tuple[float, float], as_json: bool) -> None:
    x, y = xy
    if as_json:
        print(json.dumps({"file": str(path), "task": tasks.REGRESSION, "x": x, "y": y}))
    else:
        print(f"{path}\t{x:.6f}\t{y:.6f}")
    sys.stdout.flush()


def _print_label_set(path: Path, pred: tasks.LabelSetPrediction, as_json: bool) -> None:
    if as_json:
        row = {
            "file": str(path),
            "task": tasks.MULTILABEL,
            "labels": list(pred.active),
            "scores": pred.scores,
            "thresholds": pred.thresholds,
        }
        print(json.dumps(row))
    else:
        scores = "".join(f"\t{k}:{v:.4f}" for k, v in pred.scores.items())
        print(f"{path}\t{','.join(pred.active) or '-'}{scores}")
    sys.stdout.flush()
