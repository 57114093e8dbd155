"""Export a trained model (any task) as a self-describing model directory (see :mod:`.modeldir`).

The task and the meaning of the outputs travel in ``metadata.json`` (``task``, ``classes`` = output
names, multilabel ``thresholds``); ``labels.txt`` lists the output names.

The directory is built in a temp dir beside the destination and swapped in with
:func:`dli_perception.core.fsutil.replace_dir`, so a failed export (exporter error, ONNX
that fails ``onnx.checker``, ONNX Runtime outputs that differ from torch, a full disk)
never replaces the model a classifier is serving (the checks of the written ONNX are in
:mod:`dli_perception.core.onnx_check`).

``model.onnx`` comes from torch's dynamo exporter (which needs torch >= 2.5 and ``onnxscript``) as one
self-contained file; where it is unavailable or fails (JetPack's older torch), the TorchScript
exporter (``dynamo=False``) runs instead, and metadata.json records which one ran. The
environment variable ``DLI_PERCEPTION_ONNX_EXPORTER`` (``auto``, ``dynamo``, ``torchscript``)
or the ``exporter`` argument forces one. The precision variants (INT8 Q/DQ, FP16) are built
and checked into the same directory (see :mod:`dli_perception.core.variant_build`). Opset 18 is the default: with torch 2.14 a request for opset 17 goes
through a version conversion that fails and silently leaves opset 18, so the exported opset
is checked and a mismatch is refused rather than recorded wrongly.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import math
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core import fsutil, tasks
from dli_perception.core.modeldir import (
    CHECKPOINT_FILE,
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    REPORT_DIR,
    ModelMetadata,
    load_metadata,
    model_checkpoint,
    read_model_checkpoint,
    write_metadata_files,
)
from dli_perception.core.onnx_check import DEFAULT_OPSET, MIN_OPSET, check_onnx, compare_with_torch
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.core.training import BACKBONES, TrainResult, build_model
from dli_perception.core.variant_build import VariantData, build_variants, data_from_dataset
from dli_perception.core.variants import AGREEMENT_THRESHOLD, BUILT_VARIANTS, FP32
from dli_perception.errors import ConfigError, DatasetError, ModelError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

EXPORTER_ENV = "DLI_PERCEPTION_ONNX_EXPORTER"
EXPORTERS = ("auto", "dynamo", "torchscript")
MAX_SKIPPED_LISTED = 100


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced (and can reproduce) a model."""
    import importlib

    import dli_perception

    versions = {"dli_perception": dli_perception.__version__, "python": platform.python_version()}
    for module, key in (
        ("torch", "torch"),
        ("torchvision", "torchvision"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
        ("onnxscript", "onnxscript"),
        ("numpy", "numpy"),
        ("cv2", "opencv"),
    ):
        try:
            versions[key] = str(importlib.import_module(module).__version__)
        except (ImportError, AttributeError):
            versions[key] = "unavailable"
    return versions


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays converted, tuples to lists, NaN/inf to None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return str(obj)


def dynamo_unavailable() -> str | None:
    """Why torch's dynamo ONNX exporter cannot run here (torch < 2.5, no onnxscript), or ``None``."""
    import importlib.util

    import torch

    try:
        major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    except ValueError:
        major, minor = 0, 0
    if (major, minor) < (2, 5):
        return f"torch {torch.__version__} is older than 2.5"
    if importlib.util.find_spec("onnxscript") is None:
        return "onnxscript is not installed"
    return None


def _onnx_export(model: torch.nn.Module, path: Path, dummy, opset: int, **kwargs: Any) -> None:
    """torch.onnx.export with the names, opset and file that both exporters share; ``kwargs`` are the exporter's own."""
    import torch

    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        **kwargs,
    )


def _export_dynamo(model: torch.nn.Module, path: Path, dummy, opset: int) -> None:
    import torch

    _onnx_export(
        model,
        path,
        dummy,
        opset,
        dynamo=True,
        external_data=False,
        verbose=False,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
    )


def _export_torchscript(model: torch.nn.Module, path: Path, dummy, opset: int) -> None:
    import torch

    kwargs: dict[str, Any] = {}
    if "dynamo" in torch.onnx.export.__code__.co_varnames:  # torch < 2.5 has no such argument
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # chosen on purpose where dynamo cannot run
        _onnx_export(
            model, path, dummy, opset, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, **kwargs
        )


def _export_onnx(model: torch.nn.Module, path: Path, size: int, opset: int, exporter: str = "auto") -> str:
    """Write ``path`` with the dynamo exporter, or TorchScript where dynamo is unavailable or fails.

    Returns the exporter that wrote the file (``dynamo`` or ``torchscript``).
    """
    import torch

    exporter = exporter or os.environ.get(EXPORTER_ENV, "") or "auto"
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {EXPORTERS} (also via ${EXPORTER_ENV}), got {exporter!r}")
    dummy = torch.zeros((2, 3, size, size), dtype=torch.float32)
    failures = []
    if exporter in ("auto", "dynamo"):
        why = dynamo_unavailable()
        if why is None:
            try:
                _export_dynamo(model, path, dummy, opset)
                used = "dynamo"
            except Exception as exc:  # the exporter raises many types
                why = f"{type(exc).__name__}: {str(exc)[:300]}"
        if why is not None:
            failures.append(f"dynamo exporter: {why}")
            if exporter == "dynamo":
                raise ModelError(f"ONNX export failed ({why}); the model directory was not written")
            logger.warning("dynamo ONNX exporter unavailable (%s); using the TorchScript exporter", why)
            path.unlink(missing_ok=True)
    if exporter == "torchscript" or failures:
        try:
            _export_torchscript(model, path, dummy, opset)
            used = "torchscript"
        except Exception as exc:  # the exporter raises many types
            failures.append(f"TorchScript exporter: {type(exc).__name__}: {str(exc)[:300]}")
            raise ModelError(
                f"ONNX export failed ({'; '.join(failures)}); the model directory was not written"
            ) from exc
    if not path.is_file():
        raise ModelError(f"the ONNX exporter wrote no {path.name}; the model directory was not written")
    logger.info("ONNX written by the %s exporter (opset %d)", used, opset)
    return used


def _prepare_model(model: torch.nn.Module, size: int, num_classes: int) -> torch.nn.Module:
    import torch

    model = copy.deepcopy(model).to("cpu").float().eval()
    with torch.no_grad():
        out = model(torch.zeros((1, 3, size, size)))
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ModelError(f"the model outputs shape {tuple(out.shape)} but there are {num_classes} classes")
    return model


def _training_sections(result: TrainResult) -> tuple[dict, dict, dict]:
    dataset = result.dataset.to_dict()
    if len(dataset.get("skipped", [])) > MAX_SKIPPED_LISTED:
        dataset["skipped"] = dataset["skipped"][:MAX_SKIPPED_LISTED]
    if result.task == tasks.CLASSIFICATION:
        metrics = {
            "best_val_acc": result.best_val_acc,
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            "per_class": result.per_class,
            "confusion": result.confusion,
        }
    else:  # regression: mean error, MAE, RMSE, baseline; multilabel: per-label P/R/F1, micro/macro F1, exact match
        metrics = {
            "task": result.task,
            "best_val_loss": result.best_val_loss,
            "best_epoch": result.best_epoch,
            **result.metrics,
        }
    training = {
        "status": result.status,
        "config": result.config.to_dict(),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "history": [h.to_dict() for h in result.history],
        "timings": result.timings,
        "weights": result.weights.to_dict(),
    }
    return dataset, metrics, training


def export_model_dir(
    source: TrainResult | torch.nn.Module,
    out_dir: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    preprocess: PreprocessConfig | None = None,
    backbone: str | None = None,
    weights_source: str | None = None,
    dataset: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    history: Sequence[Any] = (),
    confusion: Any = None,
    per_class: Mapping[str, Mapping[str, float]] | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    report: bool = True,
    allow_cancelled: bool = False,
    exporter: str = "",
    variants: Sequence[str] = BUILT_VARIANTS,
    variant_data: VariantData | None = None,
    agreement_threshold: float = AGREEMENT_THRESHOLD,
    task: str | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> Path:
    """Write ``out_dir`` (model.onnx, labels.txt, metadata.json, checkpoint.pt, report/) atomically.

    ``source`` is a :class:`TrainResult` (classes, preprocessing, metrics, history and dataset
    are taken from it) or a bare ``torch.nn.Module`` mapping ``(N, 3, S, S)`` float32 to
    ``(N, len(classes))`` outputs, for which ``classes`` and ``preprocess`` are required (``task``
    defaults to classification; a regression model's ``classes`` are ``["x", "y"]``, a multilabel
    model's the label names with their ``thresholds``).
    Keyword values override what a result provides. The ONNX model is checked with
    ``onnx.checker`` and must agree with torch on random batches within ``atol + rtol * |y|``.

    ``exporter`` (``auto``/``dynamo``/``torchscript``; default ``$DLI_PERCEPTION_ONNX_EXPORTER`` or
    ``auto``) picks the ONNX exporter. ``variants`` (default INT8 Q/DQ and FP16) are built beside
    ``model.onnx``, calibrated and checked on ``variant_data`` (for a :class:`TrainResult`: its own
    training/validation split, when the dataset is still there); a variant below
    ``agreement_threshold`` top-1 agreement with fp32 is refused and recorded as such.

    Raises :class:`ConfigError` (bad arguments, opset < 17, a cancelled result without
    ``allow_cancelled``) or :class:`ModelError` (export, check or comparison failed, directory
    not writable); in every failure an existing ``out_dir`` is left as it was.
    """
    if int(opset) < MIN_OPSET:
        raise ConfigError(f"opset must be >= {MIN_OPSET} (use {DEFAULT_OPSET}), got {opset}")
    if isinstance(source, TrainResult):
        if source.cancelled and not allow_cancelled:
            raise ConfigError("training was cancelled; export its best epoch only on purpose (allow_cancelled=True)")
        if not source.history:
            raise ConfigError("the training result has no completed epoch; there is nothing to export")
        r_dataset, r_metrics, r_training = _training_sections(source)
        model = source.model
        classes = list(classes if classes is not None else source.classes)
        preprocess = preprocess or source.preprocess
        backbone = backbone or source.backbone
        weights_source = weights_source or source.weights.describe()
        dataset = dataset if dataset is not None else r_dataset
        metrics = metrics if metrics is not None else r_metrics
        training = training if training is not None else r_training
        history = history or source.history
        confusion = confusion if confusion is not None else (source.confusion or None)
        per_class = per_class if per_class is not None else source.per_class
        if variant_data is None and variants:
            variant_data = _result_variant_data(source)
        task = task or source.task
        thresholds = thresholds if thresholds is not None else source.thresholds
    else:
        model = source
        if classes is None or preprocess is None:
            raise ConfigError("exporting a bare model needs classes=[...] and preprocess=PreprocessConfig(...)")
        classes = list(classes)
    meta = ModelMetadata(
        classes=classes,
        preprocess=preprocess,
        backbone=backbone or "custom",
        weights_source=weights_source or "unknown",
        opset=int(opset),
        dataset=_jsonable(dict(dataset or {})),
        metrics=_jsonable(dict(metrics or {})),
        training=_jsonable(dict(training or {})),
        versions=library_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        task=task or tasks.CLASSIFICATION,
        thresholds=dict(thresholds or {}) if (task or tasks.CLASSIFICATION) == tasks.MULTILABEL else {},
    )
    classes = tasks.output_names(meta.task, classes)
    meta.classes = classes
    try:
        ModelMetadata.from_dict(meta.to_dict())  # the checks a classifier applies when loading
    except ModelError as exc:
        raise ConfigError(f"cannot export: {exc}") from exc
    size = preprocess.size
    model = _prepare_model(model, size, len(classes))

    def build(tmp: Path) -> None:
        import torch

        onnx_path = tmp / ONNX_FILE
        used = _export_onnx(model, onnx_path, size, int(opset), exporter)
        check_onnx(onnx_path, int(opset), len(classes))
        worst = compare_with_torch(model, onnx_path, size, atol, rtol)
        meta.onnx_sha256 = fsutil.sha256_file(onnx_path)
        meta.metrics = {**meta.metrics, "onnx_max_abs_diff": worst}
        meta.variants = build_variants(tmp, meta, variant_data, which=variants, threshold=agreement_threshold)
        meta.variants[FP32]["exporter"] = used
        torch.save(model_checkpoint(model.state_dict(), meta), tmp / CHECKPOINT_FILE)
        write_metadata_files(tmp, meta)
        if report:
            _write_report(tmp / REPORT_DIR, classes, history, confusion, per_class, meta, source)
        load_metadata(tmp)  # the finished directory must load before it replaces anything
        _apply_umask(tmp)

    out_dir = Path(out_dir).expanduser()
    try:
        fsutil.replace_dir(build, out_dir)
    except OSError as exc:
        raise ModelError(
            f"cannot write model directory {out_dir}: {exc}; check the path, permissions and free space"
        ) from exc
    logger.info(
        "exported %s: %d classes, opset %d, onnx sha256 %s, variants %s",
        out_dir,
        len(classes),
        opset,
        meta.onnx_sha256[:12],
        ", ".join(f"{k} {v['status']}" for k, v in meta.variants.items()),
    )
    return out_dir


def _result_variant_data(result: TrainResult) -> VariantData | None:
    """The training run's own split (calibration: training images; check: validation images), if still readable."""
    root = result.dataset.root
    if not root or not Path(root).is_dir():
        logger.warning("dataset %s is gone: the INT8 variant is skipped, FP16 is checked on random inputs", root)
        return None
    try:
        return data_from_dataset(root, result.config)
    except (ConfigError, DatasetError) as exc:
        logger.warning("cannot read the training split of %s (%s); INT8 variant skipped", root, exc)
        return None


def _umask() -> int:
    """The process umask, read without changing it (Linux); 0o022 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _apply_umask(root: Path) -> None:
    """Give the built directory ordinary permissions (temp dirs and files are created private)."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777 & ~mask)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)


def _write_report(
    report_dir: Path,
    classes: Sequence[str],
    history: Sequence[Any],
    confusion: Any,
    per_class: Mapping[str, Mapping[str, float]] | None,
    meta: ModelMetadata | None = None,
    source: Any = None,
) -> None:
    from dli_perception.core import report

    try:
        if meta is not None and meta.task != tasks.CLASSIFICATION:
            from dli_perception.core import task_report

            task_report.write_task_report(
                report_dir,
                task=meta.task,
                names=classes,
                history=history,
                metrics=meta.metrics,
                outputs=getattr(source, "val_outputs", None),
                targets=getattr(source, "val_targets", None),
            )
            return
        report.write_report(report_dir, classes=classes, history=history, confusion=confusion, per_class=per_class)
    except ImportError as exc:  # matplotlib missing: the model is still usable
        logger.warning("no plots in the report (%s); install matplotlib for training curves", exc)
        report_dir.mkdir(parents=True, exist_ok=True)
        if per_class:
            report.write_per_class_table(per_class, report_dir / report.PER_CLASS_FILE)


def load_checkpoint_model(model_dir: str | os.PathLike, *, device: str = "cpu") -> torch.nn.Module:
    """The torch model of a model directory (from ``checkpoint.pt``, ``weights_only=True``), in eval mode.

    Raises :class:`ModelError` when the checkpoint is missing, unreadable, of an unknown backbone
    or inconsistent with ``metadata.json``.
    """

    model_dir = Path(model_dir).expanduser()
    meta = load_metadata(model_dir, require_onnx=False)
    if meta.backbone not in BACKBONES:
        raise ModelError(
            f"{model_dir} holds a {meta.backbone!r} model, which only the ONNX backends can run "
            f"(the torch backend builds {sorted(BACKBONES)})"
        )
    state = read_model_checkpoint(model_dir, meta)
    model, _ = build_model(meta.backbone, num_classes=len(meta.classes), weights="none")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(
            f"{model_dir / CHECKPOINT_FILE} does not fit a {meta.backbone} with "
            f"{len(meta.classes)} classes: {str(exc)[:300]}"
        ) from exc
    return model.to(device).eval()
