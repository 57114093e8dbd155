"""The one interface every inference backend implements, and the checks they share.

A backend is loaded from a model directory (:mod:`dli_perception.core.modeldir`),
takes a float32 ``(N, 3, S, S)`` batch made by the shared preprocessing and
returns the model's raw outputs ``(N, C)`` (:meth:`Backend.outputs`), whatever
the task and the width. :meth:`Backend.infer` adds the softmax for
classification models only, here, in one place, so every backend returns the
same kind of numbers; regression (``x, y``) and multi-label outputs (logits) are
returned raw and decoded by :func:`dli_perception.core.tasks.decode_xy` and
:func:`~dli_perception.core.tasks.decode_multilabel` (:meth:`Backend.predict`).
:meth:`Backend.classify` goes from RGB frames to named class predictions with
the model's own :class:`~dli_perception.core.preprocess.PreprocessConfig`.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.fsutil import sha256_file
from dli_perception.core.modeldir import ONNX_FILE, ModelMetadata, load_metadata
from dli_perception.core.preprocess import preprocess_batch
from dli_perception.errors import BackendUnavailableError, ConfigError, ModelError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
_B = TypeVar("_B", bound="Backend")


@dataclass(frozen=True)
class Prediction:
    """The top class of one frame: ``label`` (class name), its ``index``, ``score`` in [0, 1], all ``probs``."""

    label: str
    index: int
    score: float
    probs: np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits as float32 probabilities; each row sums to 1."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def check_options(backend: str, options: Mapping[str, Any], known: Sequence[str]) -> None:
    """Refuse option names a backend does not know (typos), listing the ones it does."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for the {backend} backend; known: {sorted(known)}")


def check_onnx_integrity(model_dir: Path, meta: ModelMetadata) -> Path:
    """Return the path of ``model.onnx`` after checking it against ``metadata.onnx_sha256`` when recorded.

    Raises :class:`ModelError` when the file is missing or its bytes changed since export.
    """
    path = model_dir / ONNX_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing; re-export the model")
    if meta.onnx_sha256:
        actual = sha256_file(path)
        if actual != meta.onnx_sha256:
            raise ModelError(
                f"{path} does not match metadata.json (sha256 {actual[:12]}… vs recorded "
                f"{meta.onnx_sha256[:12]}…): the file is corrupt or was replaced; re-export the model"
            )
    return path


def check_io_shape(where: str, input_shape: Sequence[Any], output_shape: Sequence[Any], meta: ModelMetadata) -> None:
    """Check a model's declared input ``(N, 3, S, S)`` and output ``(N, C)`` against the metadata.

    Dimensions given as strings or ``None``/``-1`` are dynamic and accepted; a fixed
    dimension that disagrees raises :class:`ModelError`.
    """

    def fixed(d: Any) -> int | None:
        return d if isinstance(d, int) and d >= 0 else None

    expected_in = tuple(meta.preprocess.input_shape)
    if len(input_shape) != 4:
        raise ModelError(f"{where}: input must be 4-D (N, 3, S, S), the model declares {list(input_shape)}")
    got_in = tuple(fixed(d) for d in input_shape[1:])
    if any(g is not None and g != e for g, e in zip(got_in, expected_in, strict=False)):
        raise ModelError(
            f"{where}: model input is {list(input_shape)} but metadata.json preprocessing gives "
            f"(N, {', '.join(map(str, expected_in))}); re-export the model or fix its metadata"
        )
    if len(output_shape) != 2:
        raise ModelError(f"{where}: output must be 2-D (N, C), the model declares {list(output_shape)}")
    c = fixed(output_shape[1])
    if c is not None and c != meta.num_classes:
        raise ModelError(
            f"{where}: model outputs {c} classes but metadata.json lists {meta.num_classes} "
            f"({meta.classes}); the model directory is inconsistent, re-export it"
        )


class Backend(abc.ABC):
    """A loaded model that turns preprocessed batches into class probabilities.

    Subclasses implement :meth:`load` and :meth:`_logits`. ``infer`` is safe to call
    from several threads (calls are serialised); call :meth:`close` (or use ``with``)
    to release sessions and device memory.
    """

    name: ClassVar[str] = "base"
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model_dir: str | os.PathLike, metadata: ModelMetadata) -> None:
        self.model_dir = Path(model_dir)
        self.metadata = metadata
        self.device = "cpu"
        self.precision = "fp32"
        self.variant = "fp32"
        """Which precision variant of the model directory is served (see :mod:`dli_perception.core.variants`)."""
        self.variant_reason = ""
        """Why that variant: what was asked for, what was passed over and why (logs and diagnostics)."""
        self.max_batch: int | None = None
        self._lock = threading.Lock()
        self._closed = False

    # -- construction -------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def load(cls, model_dir: str | os.PathLike, **options: Any) -> Backend:
        """Load ``model_dir``; raises :class:`ModelError` (bad model) or :class:`BackendUnavailableError`."""

    @staticmethod
    def read_metadata(model_dir: str | os.PathLike, *, require_onnx: bool = True) -> ModelMetadata:
        """Read and cross-check the model directory's metadata (see :func:`load_metadata`)."""
        return load_metadata(model_dir, require_onnx=require_onnx)

    # -- properties ---------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names in output order."""
        return list(self.metadata.classes)

    @property
    def num_classes(self) -> int:
        return self.metadata.num_classes

    @property
    def input_size(self) -> int:
        """Side S of the square model input, in pixels."""
        return self.metadata.preprocess.size

    def describe(self) -> str:
        """One line for logs and diagnostics, e.g. ``onnxruntime on cpu (fp32)``."""
        return f"{self.name} on {self.device} ({self.precision})"

    # -- inference ----------------------------------------------------------------------
    @abc.abstractmethod
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw ``(N, C)`` logits for a validated, C-contiguous float32 batch."""

    def validate_batch(self, batch: np.ndarray) -> np.ndarray:
        """Check a batch is float32 ``(N, 3, S, S)`` with N >= 1; returns it C-contiguous.

        Raises :class:`ConfigError` naming what is wrong.
        """
        if not isinstance(batch, np.ndarray):
            raise ConfigError(f"infer expects a numpy array, got {type(batch).__name__}")
        expected = self.metadata.preprocess.input_shape
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ConfigError(
                f"infer expects a (N, {', '.join(map(str, expected))}) batch, got shape {batch.shape}; "
                "make it with preprocess_batch and the model's PreprocessConfig"
            )
        if batch.shape[0] < 1:
            raise ConfigError("infer got an empty batch (N=0)")
        if batch.dtype != np.float32:
            raise ConfigError(f"infer expects float32 input, got {batch.dtype}")
        return np.ascontiguousarray(batch)

    @property
    def task(self) -> str:
        """The model's task (:mod:`dli_perception.core.tasks`)."""
        return self.metadata.task

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """A classification model's class probabilities ``(N, C)`` float32 (rows sum to 1) for a preprocessed
        batch; for regression and multilabel models their raw outputs (:meth:`outputs`), never a softmax."""
        outputs = self.outputs(batch)
        return softmax(outputs) if self.metadata.task == tasks.CLASSIFICATION else outputs

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """The model's raw outputs ``(N, C)`` float32 for a preprocessed batch (logits, or ``x, y``)."""
        batch = self.validate_batch(batch)
        with self._lock:
            if self._closed:
                raise BackendUnavailableError(f"the {self.name} backend was closed; load the model again")
            logits = self._logits(batch)
        logits = np.asarray(logits)
        if logits.shape != (batch.shape[0], self.num_classes):
            raise ModelError(
                f"{self.name}: model returned shape {logits.shape}, expected "
                f"({batch.shape[0]}, {self.num_classes}); the model directory is inconsistent"
            )
        return np.asarray(logits, dtype=np.float32)

    def predict(
        self, images_rgb: Sequence[np.ndarray], thresholds: Mapping[str, float] | None = None
    ) -> list[Prediction | tuple[float, float] | tasks.LabelSetPrediction]:
        """Each HxWx3 uint8 RGB frame's decoded result for the model's task: a :class:`Prediction`
        (classification), ``(x, y)`` (regression, :func:`~dli_perception.core.tasks.decode_xy`) or a
        :class:`~dli_perception.core.tasks.LabelSetPrediction` at ``thresholds`` (default: the model's own)."""
        if self.metadata.task == tasks.CLASSIFICATION:
            return list(self.classify(images_rgb))
        if len(images_rgb) == 0:
            return []
        out = self.outputs(preprocess_batch(images_rgb, self.metadata.preprocess))
        if self.metadata.task == tasks.REGRESSION:
            return [tasks.decode_xy(row) for row in out]
        limits = self.metadata.thresholds if thresholds is None else thresholds
        return [tasks.decode_multilabel(row, self.metadata.classes, limits) for row in out]

    def classify(self, images_rgb: Sequence[np.ndarray]) -> list[Prediction]:
        """Top class of each HxWx3 uint8 RGB frame, preprocessed with the model's own config.

        Classification models only (:class:`ModelError` otherwise: use :meth:`predict`)."""
        if self.metadata.task != tasks.CLASSIFICATION:
            raise ModelError(f"{self.model_dir} is a {self.metadata.task} model; it has no top class (use predict)")
        if len(images_rgb) == 0:
            return []
        probs = self.infer(preprocess_batch(images_rgb, self.metadata.preprocess))
        out = []
        for row in probs:
            i = int(np.argmax(row))
            out.append(Prediction(label=self.metadata.classes[i], index=i, score=float(row[i]), probs=row))
        return out

    def warmup(self, n: int = 3, batch_size: int = 1) -> None:
        """Run ``n`` inferences on a zero batch so lazy allocations and kernel selection happen now."""
        if batch_size < 1:
            raise ConfigError(f"warmup batch_size must be >= 1, got {batch_size}")
        zeros = np.zeros((batch_size, *self.metadata.preprocess.input_shape), dtype=np.float32)
        for _ in range(max(0, int(n))):
            self.infer(zeros)

    # -- lifetime -----------------------------------------------------------------------
    def _release(self) -> None:
        """Free sessions and device memory (subclasses); called once by :meth:`close`."""

    def close(self) -> None:
        """Release the model; further :meth:`infer` calls raise. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()
        log.debug("closed %s backend for %s", self.name, self.model_dir)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self: _B) -> _B:  # noqa: PYI019  (typing.Self needs Python 3.11; Humble has 3.10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()} model={str(self.model_dir)!r}>"
