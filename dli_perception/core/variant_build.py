"""Build the precision variants of a model directory and check them against fp32.

- INT8 Q/DQ (:func:`dli_perception.core.backends.quantize.quantize_qdq`), calibrated on up to
  ``calibration_images`` training images taken round-robin across classes through the one
  preprocessing, then run with ONNX Runtime on the validation split beside fp32: top-1
  agreement and accuracy go into ``metadata.json``; below :data:`~.variants.AGREEMENT_THRESHOLD`
  the variant is refused (recorded with the figures, file not written) and fp32 keeps serving.
- FP16 (``onnxconverter-common``'s float16 conversion with float32 input and output), loaded in
  ONNX Runtime on the CPU and checked the same way (on seeded random inputs when no dataset is at hand).

:func:`build_variants` writes into a directory being built (the exporter's temp dir);
:func:`add_variants` adds variants to an existing model directory: files are built in a temp
dir inside it, moved in with ``os.replace`` and ``metadata.json`` is rewritten atomically last.
A variant that fails to build is recorded as failed with the reason; it never fails the export.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core import tasks
from dli_perception.core import variants as V
from dli_perception.core.fsutil import atomic_write_text, fsync_dir, sha256_file
from dli_perception.core.modeldir import METADATA_FILE, ModelMetadata, load_metadata, metadata_json
from dli_perception.core.preprocess import PreprocessConfig, preprocess_batch
from dli_perception.errors import DatasetError, DliPerceptionError, ModelError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_IMAGES = 64
DEFAULT_VALIDATION_IMAGES = 1000
RANDOM_CHECK_INPUTS = 32
BATCH = 8


@dataclass
class VariantData:
    """Images for building and checking variants: training images to calibrate on, labelled validation images."""

    calibration: list[Path]
    validation: list[tuple[Path, Any]]
    classes: list[str]
    """Class names of the validation labels (labels index this list, not the model's outputs); for the other
    tasks the output names the targets are given in (``x, y`` or the dataset's labels)."""
    source: str = ""
    dataset_sha256: str = ""
    task: str = tasks.CLASSIFICATION


def _round_robin(samples: Sequence[tuple[str, Any]], limit: int) -> list[tuple[str, Any]]:
    by_class: dict[int, list[tuple[str, Any]]] = {}
    for path, label in sorted(samples, key=lambda s: s[0]):
        key = label if isinstance(label, (int, np.integer)) else 0  # regression/multilabel: one bucket
        by_class.setdefault(int(key), []).append((path, label))
    groups = [by_class[k] for k in sorted(by_class)]
    out: list[tuple[str, int]] = []
    depth = 0
    while len(out) < limit and any(depth < len(g) for g in groups):
        for g in groups:
            if depth < len(g) and len(out) < limit:
                out.append(g[depth])
        depth += 1
    return out


def data_from_dataset(
    root: str | os.PathLike,
    config: Any = None,
    *,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    validation_images: int = DEFAULT_VALIDATION_IMAGES,
) -> VariantData:
    """The training/validation split of ``root`` made exactly as training made it (same seed, fraction, cap).

    ``config`` is the run's :class:`~dli_perception.core.training.TrainConfig` (default settings when
    ``None``). Raises :class:`DatasetError` when the dataset cannot be read.
    """
    from dli_perception.core.training import TrainConfig, load_data

    data = load_data(root, config if config is not None else TrainConfig(weights="none"))
    return VariantData(
        calibration=[Path(p) for p, _ in _round_robin(data.train, max(1, calibration_images))],
        validation=[
            (Path(p), int(label) if data.task == tasks.CLASSIFICATION else np.asarray(label, dtype=np.float32))
            for p, label in _round_robin(data.val, max(1, validation_images))
        ],
        classes=list(data.classes),
        source=data.summary.root,
        dataset_sha256=data.summary.sha256,
        task=data.task,
    )


def _image_batches(
    paths: Sequence[Path], cfg: PreprocessConfig, batch: int = BATCH
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """Preprocessed batches of the readable images, with the positions (in ``paths``) they hold."""
    from dli_perception.core.training import read_rgb

    images: list[np.ndarray] = []
    index: list[int] = []
    for i, path in enumerate(paths):
        try:
            images.append(read_rgb(path))
        except DatasetError as exc:
            log.warning("variant check: skipping %s", exc)
            continue
        index.append(i)
        if len(images) == batch:
            yield preprocess_batch(images, cfg), index
            images, index = [], []
    if images:
        yield preprocess_batch(images, cfg), index


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class _Checker:
    """fp32 predictions on the check inputs, computed once; variants are compared against them.

    What "agree" means depends on the task (see :mod:`dli_perception.core.variants`): the same top-1 class
    (classification), outputs within :data:`~.variants.XY_DELTA_BOUND` on average (regression), the same
    active label set at the model's thresholds (multilabel).
    """

    def __init__(self, fp32_path: Path, meta: ModelMetadata, data: VariantData | None) -> None:
        self.meta = meta
        self.task = meta.task
        if data is not None and data.task != meta.task:
            raise DatasetError(f"the dataset is {data.task} but the model is {meta.task}")
        self.kind = "validation" if data and data.validation else "random"
        if self.kind == "validation" and self.task != tasks.CLASSIFICATION:
            if list(data.classes) != list(meta.classes):
                raise DatasetError(f"the dataset's outputs {data.classes} differ from the model's ({meta.classes})")
            paths = [p for p, _ in data.validation]
            self.batches = [
                (b, [data.validation[i][1] for i in idx]) for b, idx in _image_batches(paths, meta.preprocess)
            ]
            if not self.batches:
                raise DatasetError("no validation image could be read")
        elif self.kind == "validation":
            unknown = sorted(set(data.classes) - set(meta.classes))
            if unknown:
                raise DatasetError(f"the dataset has classes {unknown} the model does not know ({meta.classes})")
            to_output = [meta.classes.index(c) for c in data.classes]  # dataset label -> model output index
            paths = [p for p, _ in data.validation]
            self.batches = [
                (b, [to_output[data.validation[i][1]] for i in idx])
                for b, idx in _image_batches(paths, meta.preprocess)
            ]
            if not self.batches:
                raise DatasetError("no validation image could be read")
        else:
            rng = np.random.default_rng(0)
            shape = (BATCH, *meta.preprocess.input_shape)
            self.batches = [
                (rng.standard_normal(shape).astype(np.float32), None) for _ in range(RANDOM_CHECK_INPUTS // BATCH)
            ]
        limits = tasks.check_thresholds(meta.thresholds, meta.classes) if self.task == tasks.MULTILABEL else {}
        self.limits = np.asarray([limits[c] for c in meta.classes]) if limits else None
        self.fp32 = self.predict(fp32_path)
        self.labels = (
            np.concatenate([np.asarray(lbl) for _, lbl in self.batches]) if self.kind == "validation" else None
        )

    def outputs(self, path: Path) -> np.ndarray:
        """Raw outputs ``(n, C)`` of the model at ``path`` on the check inputs."""
        session = _session(path)
        name = self.meta.input_name
        return np.concatenate([session.run(None, {name: b})[0] for b, _ in self.batches]).astype(np.float64)

    def predict(self, path: Path) -> np.ndarray:
        """What the task compares: top-1 class, raw XY, or the active-label matrix at the model's thresholds."""
        out = self.outputs(path)
        if self.task == tasks.CLASSIFICATION:
            return np.argmax(out, axis=1)
        if self.task == tasks.MULTILABEL:
            return tasks.sigmoid(out) >= self.limits
        return out

    def accuracy(self, pred: np.ndarray) -> float | None:
        """Top-1 accuracy, exact-match ratio (multilabel) or mean Euclidean error (regression) on the labels."""
        if self.labels is None:
            return None
        if self.task == tasks.REGRESSION:
            return float(np.sqrt(((pred - self.labels) ** 2).sum(axis=1)).mean())
        if self.task == tasks.MULTILABEL:
            return float(np.mean(np.all(pred == (self.labels > 0.5), axis=1)))
        return float(np.mean(pred == self.labels))

    def compare(self, path: Path) -> dict[str, Any]:
        pred = self.predict(path)
        figures: dict[str, Any] = {"val_images": len(pred), "check_data": self.kind, "task": self.task}
        if self.task == tasks.REGRESSION:
            delta = np.abs(pred - self.fp32)
            figures.update(
                mean_abs_delta=float(delta.mean()),
                max_abs_delta=float(delta.max()),
                mean_error=self.accuracy(pred),
                fp32_mean_error=self.accuracy(self.fp32),
            )
            return figures
        agree = np.all(pred == self.fp32, axis=1) if self.task == tasks.MULTILABEL else pred == self.fp32
        figures.update(
            agreement=float(np.mean(agree)), accuracy=self.accuracy(pred), fp32_accuracy=self.accuracy(self.fp32)
        )
        return figures


def _calibration_batches(paths: Sequence[Path], cfg: PreprocessConfig) -> list[np.ndarray]:
    return [b for b, _ in _image_batches(paths, cfg)]


def _convert_fp16(src: Path, dst: Path) -> str:
    """Write the float16 copy of ``src`` (float32 input/output kept); returns the converter's name and version."""
    try:
        import onnxconverter_common
        from onnxconverter_common import float16
    except ImportError as exc:
        raise _Skip(f"onnxconverter-common is not installed (pip install onnxconverter-common): {exc}") from exc
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight below float16's range
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return f"onnxconverter-common {onnxconverter_common.__version__} (keep_io_types)"


class _Skip(Exception):
    """A variant that cannot be built here (a tool or the data is missing), with the reason."""


def _entry(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "file": V.VARIANT_FILES[name],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }


def _build_one(name: str, out_dir: Path, fp32: Path, meta: ModelMetadata, data, checker, threshold) -> dict[str, Any]:
    from dli_perception.core.backends.quantize import QUANT_SETTINGS, quantize_qdq

    path = out_dir / V.VARIANT_FILES[name]
    extra: dict[str, Any] = {"threshold": threshold}
    if name == V.INT8_QDQ:
        if data is None or not data.calibration:
            raise _Skip(
                "no training images to calibrate on; pass the dataset (dli-perception export MODEL_DIR --dataset DIR)"
            )
        batches = _calibration_batches(data.calibration, meta.preprocess)
        quantize_qdq(fp32, batches, path, input_name=meta.input_name)
        extra.update(calibration_images=sum(b.shape[0] for b in batches), quantization=dict(QUANT_SETTINGS))
    else:
        extra["converter"] = _convert_fp16(fp32, path)
    try:
        figures = checker.compare(path)
    except Exception as exc:  # onnxruntime's own exception types: the file does not load or run
        path.unlink(missing_ok=True)
        raise ModelError(f"ONNX Runtime cannot run the {name} model ({type(exc).__name__}: {exc})") from exc
    extra.update(figures)
    where = V.describe_entry(name, figures)
    if meta.task == tasks.REGRESSION:
        extra["threshold"] = V.XY_DELTA_BOUND
        passed = figures["mean_abs_delta"] <= V.XY_DELTA_BOUND
        required = f"above the {V.XY_DELTA_BOUND} bound"
    else:
        passed = figures["agreement"] >= threshold
        required = f"below the {100 * threshold:.0f} % required"
    if not passed:
        path.unlink(missing_ok=True)
        reason = (
            f"{where}, {required}; not written, fp32 serves instead (more or more varied training images usually help)"
        )
        log.warning("%s variant refused: %s", name, reason)
        return _entry(name, status=V.REFUSED, reason=reason, **extra)
    log.info("%s variant accepted: %s", name, where)
    return _entry(name, status=V.ACCEPTED, reason=where, sha256=sha256_file(path), bytes=path.stat().st_size, **extra)


def build_variants(
    out_dir: Path,
    meta: ModelMetadata,
    data: VariantData | None,
    *,
    fp32_path: Path | None = None,
    which: Sequence[str] = V.BUILT_VARIANTS,
    threshold: float = V.AGREEMENT_THRESHOLD,
) -> dict[str, dict[str, Any]]:
    """Build ``which`` variants of ``fp32_path`` (default ``out_dir/model.onnx``) into ``out_dir``; returns entries.

    The returned dict has an entry per variant (and ``fp32``), each with ``status`` and ``reason``;
    only accepted variants leave a file in ``out_dir``. Never raises for a variant that fails.
    """
    unknown = sorted(set(which) - set(V.BUILT_VARIANTS))
    if unknown:
        raise ModelError(f"unknown variant(s) {unknown}; choose from {V.BUILT_VARIANTS}")
    fp32 = fp32_path or out_dir / V.VARIANT_FILES[V.FP32]
    try:
        checker = _Checker(fp32, meta, data)
    except DatasetError as exc:
        log.warning("variant check falls back to random inputs and INT8 is skipped: %s", exc)
        checker, data = _Checker(fp32, meta, None), None
    entries: dict[str, dict[str, Any]] = {
        V.FP32: {
            "file": V.VARIANT_FILES[V.FP32],
            "status": V.ACCEPTED,
            "sha256": meta.onnx_sha256 or sha256_file(fp32),
            ("mean_error" if meta.task == tasks.REGRESSION else "accuracy"): checker.accuracy(checker.fp32),
            "val_images": len(checker.fp32),
            "check_data": checker.kind,
        }
    }
    if data is not None:
        entries[V.FP32]["dataset"] = data.source
    for name in which:
        try:
            entries[name] = _build_one(name, out_dir, fp32, meta, data, checker, threshold)
        except _Skip as exc:
            log.info("%s variant skipped: %s", name, exc)
            entries[name] = _entry(name, status=V.SKIPPED, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a variant failing must not fail the export
            (out_dir / V.VARIANT_FILES[name]).unlink(missing_ok=True)
            reason = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.warning("%s variant failed: %s", name, reason)
            entries[name] = _entry(name, status=V.FAILED, reason=reason)
    return entries


def _data_for(model_dir: Path, meta: ModelMetadata, dataset, calibration_images: int) -> tuple[VariantData | None, str]:
    """Calibration/validation data of an existing model directory: its recorded dataset and split, or ``dataset``."""
    from dli_perception.core.training import TrainConfig

    root = dataset or meta.dataset.get("root")
    if not root:
        return None, "metadata.json records no training dataset; pass --dataset DIR"
    if not Path(root).expanduser().is_dir():
        return None, f"the training dataset {root} is not on this machine; pass --dataset DIR"
    config = None
    if isinstance(meta.training.get("config"), dict):
        try:
            config = TrainConfig.from_dict(meta.training["config"])
        except DliPerceptionError as exc:
            log.warning("cannot rebuild the training split (%s); using the default split", exc)
    try:
        data = data_from_dataset(Path(root).expanduser(), config, calibration_images=calibration_images)
    except DliPerceptionError as exc:
        return None, f"cannot read the dataset {root}: {exc}"
    recorded = meta.dataset.get("sha256")
    if recorded and data.dataset_sha256 != recorded:
        log.warning(
            "dataset %s changed since training (sha256 differs): the validation split may hold images the model "
            "was trained on, so the agreement figures are less strict",
            root,
        )
    return data, ""


def add_variants(
    model_dir: str | os.PathLike,
    *,
    dataset: str | os.PathLike | None = None,
    which: Sequence[str] = V.BUILT_VARIANTS,
    threshold: float = V.AGREEMENT_THRESHOLD,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
) -> dict[str, dict[str, Any]]:
    """Add (or rebuild) precision variants of an existing model directory, atomically; returns the new entries.

    Calibration and validation images are the training split recorded in metadata.json, or the
    ``dataset`` given. Raises :class:`ModelError` when the directory or its fp32 model is not intact.
    """
    from dli_perception.core.backends.base import check_onnx_integrity

    model_dir = Path(model_dir).expanduser()
    meta = load_metadata(model_dir)
    fp32 = check_onnx_integrity(model_dir, meta)
    data, why = _data_for(model_dir, meta, dataset, calibration_images)
    if data is None:
        log.warning("no calibration/validation images: %s", why)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".variants-", dir=model_dir))
    except OSError as exc:
        raise ModelError(f"cannot write into {model_dir} ({exc}); check its permissions and free space") from exc
    try:
        entries = build_variants(tmp, meta, data, fp32_path=fp32, which=which, threshold=threshold)
        if data is None and V.INT8_QDQ in entries and entries[V.INT8_QDQ]["status"] == V.SKIPPED:
            entries[V.INT8_QDQ]["reason"] = why
        for name, entry in entries.items():
            if name != V.FP32 and entry["status"] == V.ACCEPTED:
                os.replace(tmp / entry["file"], model_dir / entry["file"])
        fsync_dir(model_dir)
        meta.variants = {**meta.variants, **entries}
        atomic_write_text(model_dir / METADATA_FILE, metadata_json(meta))
        for name, entry in entries.items():  # a stale file of a variant now refused is never served: tidy it
            if name != V.FP32 and entry["status"] != V.ACCEPTED:
                (model_dir / V.VARIANT_FILES[name]).unlink(missing_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot add variants to {model_dir}: {exc}; check its permissions and free space") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_metadata(model_dir)
    return entries
