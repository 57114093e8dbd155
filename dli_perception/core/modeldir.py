"""The model directory: the one artefact passed from the trainer to every classifier.

Layout (all written together by :mod:`dli_perception.core.export`)::

    MODEL_DIR/
      model.onnx        float32 input ``input`` (N, 3, S, S), output ``logits`` (N, C), dynamic batch
      model.int8.onnx   the same network with explicit INT8 quantization (Q/DQ), when it passed its check
      model.fp16.onnx   the same network in float16 with float32 input/output (strongly typed TensorRT)
      labels.txt        one class name per line, in output order
      metadata.json     :class:`ModelMetadata` as JSON
      checkpoint.pt     model_checkpoint(): state dict, classes, backbone, preprocessing (weights_only=True)
      report/           training curves, confusion matrix, per-class table

A directory is self-describing: :func:`load_metadata` refuses one whose files
disagree (class count vs. labels.txt, missing model, unknown format) with a
:class:`~dli_perception.errors.ModelError` that says what is wrong.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.core import tasks
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.errors import ConfigError, ModelError, TargetError

FORMAT_VERSION = 1
ONNX_FILE = "model.onnx"
LABELS_FILE = "labels.txt"
METADATA_FILE = "metadata.json"
CHECKPOINT_FILE = "checkpoint.pt"
REPORT_DIR = "report"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class ModelMetadata:
    """What a classifier needs to know about a model, plus provenance for people.

    ``task`` says what the outputs mean (:mod:`dli_perception.core.tasks`): ``classes`` lists the
    output names in order: class names (classification), label names (multilabel) or ``x, y``
    (regression). ``thresholds`` are the multi-label score thresholds by label (0.5 when absent).
    """

    classes: list[str]
    preprocess: PreprocessConfig
    backbone: str = "resnet18"
    weights_source: str = "none"
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    onnx_sha256: str = ""
    opset: int = 18
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    variants: dict[str, Any] = field(default_factory=dict)
    """Precision variants by name (``fp32``, ``int8_qdq``, ``fp16``): file, sha256, status, checks;
    see :mod:`dli_perception.core.variants`. Empty in directories exported before variants existed."""
    task: str = tasks.CLASSIFICATION
    thresholds: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> list[int]:
        """Input shape with a dynamic batch written as -1: [-1, 3, S, S]."""
        return [-1, *self.preprocess.input_shape]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["num_classes"] = self.num_classes
        d["input_shape"] = self.input_shape
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelMetadata":
        data = dict(data)
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelError(
                f"metadata format_version {version!r} is not supported (expected {FORMAT_VERSION}); "
                "re-export the model with this version of dli_perception"
            )
        num_classes = data.pop("num_classes", None)
        data.pop("input_shape", None)
        try:
            data["preprocess"] = PreprocessConfig.from_dict(data["preprocess"])
            meta = cls(**data)
        except KeyError as exc:
            raise ModelError(f"metadata.json lacks the required key {exc}") from exc
        except (TypeError, ConfigError) as exc:
            raise ModelError(f"metadata.json is invalid: {exc}") from exc
        if not meta.classes or not all(isinstance(c, str) and c for c in meta.classes):
            raise ModelError("metadata.json 'classes' must be a non-empty list of class names")
        if len(set(meta.classes)) != len(meta.classes):
            raise ModelError(f"metadata.json 'classes' has duplicates: {meta.classes}")
        if not isinstance(meta.variants, dict) or not all(isinstance(v, dict) for v in meta.variants.values()):
            raise ModelError("metadata.json 'variants' must be an object of objects; re-export the model")
        try:
            tasks.check_task(meta.task)
            if meta.task == tasks.REGRESSION and list(meta.classes) != list(tasks.XY_NAMES):
                raise TargetError(f"a regression model's outputs must be {list(tasks.XY_NAMES)}, got {meta.classes}")
            if meta.thresholds:
                if meta.task != tasks.MULTILABEL:
                    raise TargetError(f"'thresholds' only apply to multilabel models, this one is {meta.task}")
                meta.thresholds = tasks.check_thresholds(meta.thresholds, meta.classes)
        except TargetError as exc:
            raise ModelError(f"metadata.json: {exc}") from exc
        if num_classes is not None and num_classes != meta.num_classes:
            raise ModelError(f"metadata.json says num_classes={num_classes} but lists {meta.num_classes} classes")
        return meta


def load_metadata(model_dir: str | os.PathLike, *, require_onnx: bool = True) -> ModelMetadata:
    """Read and cross-check ``metadata.json`` and ``labels.txt`` of a model directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist; train one with `dli-perception train`")
    meta_path = model_dir / METADATA_FILE
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{meta_path} is missing: not a dli_perception model directory") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{meta_path} is not valid JSON ({exc}); the model directory is corrupt") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{meta_path} must hold a JSON object")
    meta = ModelMetadata.from_dict(raw)
    labels_path = model_dir / LABELS_FILE
    if labels_path.exists():
        labels = [line for line in labels_path.read_text(encoding="utf-8").splitlines() if line]
        if labels != meta.classes:
            raise ModelError(f"{labels_path} lists {labels} but metadata.json lists {meta.classes}")
    if require_onnx and not (model_dir / ONNX_FILE).is_file():
        raise ModelError(f"{model_dir / ONNX_FILE} is missing; re-export the model")
    return meta


def metadata_json(meta: ModelMetadata) -> str:
    """The text of ``metadata.json`` for ``meta`` (sorted keys, indented, trailing newline)."""
    return json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n"


def write_metadata_files(model_dir: str | os.PathLike, meta: ModelMetadata) -> None:
    """Write ``metadata.json`` and ``labels.txt`` into a directory being built (not atomic by itself)."""
    model_dir = Path(model_dir)
    (model_dir / METADATA_FILE).write_text(metadata_json(meta))
    (model_dir / LABELS_FILE).write_text("".join(f"{c}\n" for c in meta.classes))


MODEL_CHECKPOINT_FORMAT = "dli_perception.model_checkpoint"
MODEL_CHECKPOINT_VERSION = 1


def model_checkpoint(state_dict: dict, meta: ModelMetadata) -> dict[str, Any]:
    """The ``checkpoint.pt`` content for a model directory: tensors and plain values only."""
    return {
        "format": MODEL_CHECKPOINT_FORMAT,
        "format_version": MODEL_CHECKPOINT_VERSION,
        "state_dict": state_dict,
        "classes": list(meta.classes),
        "backbone": meta.backbone,
        "preprocess": meta.preprocess.to_dict(),
        "weights_source": meta.weights_source,
    }


def read_model_checkpoint(model_dir: str | os.PathLike, meta: ModelMetadata) -> dict:
    """The state dict of ``model_dir/checkpoint.pt``, loaded with ``weights_only=True`` and checked.

    Raises :class:`ModelError` for a missing, corrupt or unsafe file (pickled objects are
    refused), another format, or classes/backbone/preprocessing that disagree with ``meta``.
    """
    import torch

    path = Path(model_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing; re-export the model (dli-perception export) or use an ONNX backend")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError for pickled objects, RuntimeError for a bad zip, ...
        raise ModelError(
            f"{path} cannot be loaded with weights_only=True ({type(exc).__name__}: {str(exc)[:200]}); it is "
            "corrupt or holds pickled objects, which are refused for safety; re-export the model"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != MODEL_CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a dli_perception model checkpoint; re-export the model")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ModelError(f"{path} has no state dict; re-export the model")
    if list(ckpt.get("classes", [])) != meta.classes:
        raise ModelError(f"{path} was trained for classes {ckpt.get('classes')}, metadata.json lists {meta.classes}")
    if ckpt.get("backbone") != meta.backbone:
        raise ModelError(f"{path} holds backbone {ckpt.get('backbone')!r}, metadata.json says {meta.backbone!r}")
    try:
        same = PreprocessConfig.from_dict(ckpt.get("preprocess", {})) == meta.preprocess
    except (ConfigError, TypeError) as exc:
        raise ModelError(f"{path} has invalid preprocessing: {exc}") from exc
    if not same:
        raise ModelError(f"{path} preprocessing differs from metadata.json; re-export the model")
    return ckpt["state_dict"]
