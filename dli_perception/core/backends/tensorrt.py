"""TensorRT backend: ``model.onnx`` -> serialized engine (FP32/FP16/INT8), cached on disk, run on CUDA streams.

This module holds whether TensorRT can run here (:func:`tensorrt_availability`) and
:class:`TensorRTBackend` (load, infer, release). The engine cache (keys, paths,
sidecars, atomic stores) is :mod:`.trt_cache`; the TensorRT API differences between
versions (features, build plans, building, running) are :mod:`.trt_compat`. The cache
names are re-exported here, so ``dli_perception.core.backends.tensorrt`` stays the one
import for callers.

Everything around the engine (availability, keys, sidecars, lookup, eviction,
calibration data) is plain Python testable without a GPU; only
:class:`TensorRTBackend` and :func:`~.trt_compat.build_engine` need ``tensorrt`` and CUDA.
Device buffers are PyTorch CUDA tensors (no pycuda needed), allocated once for
``max_batch`` frames.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core import variants as V
from dli_perception.core.backends import calibration as _calibration
from dli_perception.core.backends.base import Backend, check_io_shape, check_onnx_integrity, check_options
from dli_perception.core.backends.calibration import calibration_batches, calibration_fingerprint
from dli_perception.core.backends.trt_cache import (
    CACHE_ENV,
    CACHE_FORMAT,
    CALIB_SUFFIX,
    ENGINE_SUFFIX,
    SIDECAR_SUFFIX,
    CacheLookup,
    EngineCacheResult,
    EngineKey,
    default_engine_cache_dir,
    engine_paths,
    evict_engine,
    load_or_build_engine,
    lookup_engine,
    onnx_fingerprint,
    prune_engine_cache,
    store_engine,
    validate_sidecar,
)
from dli_perception.core.backends.trt_compat import (
    BindingIO,
    BuildPlan,
    TensorIO,
    build_engine,
    features,
    first_that_loads,
    make_calibrator,
    make_logger,
    plan_builds,
    tensorrt_major,
)
from dli_perception.errors import BackendUnavailableError, ConfigError, DliPerceptionError, ModelError

__all__ = [
    "CACHE_ENV",
    "CACHE_FORMAT",
    "CALIB_SUFFIX",
    "ENGINE_SUFFIX",
    "INSTALL_HINT",
    "SIDECAR_SUFFIX",
    "CacheLookup",
    "EngineCacheResult",
    "EngineKey",
    "TensorRTAvailability",
    "TensorRTBackend",
    "default_engine_cache_dir",
    "engine_paths",
    "evict_engine",
    "load_or_build_engine",
    "lookup_engine",
    "onnx_fingerprint",
    "prune_engine_cache",
    "store_engine",
    "tensorrt_availability",
    "tensorrt_major",
    "validate_sidecar",
]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "on a Jetson TensorRT comes with JetPack (apt install python3-libnvinfer, then use the system Python "
    "or a venv with --system-site-packages); on a desktop with an NVIDIA GPU `pip install tensorrt`; "
    "PyTorch with CUDA is needed too (device buffers)"
)


# --------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorRTAvailability:
    """Whether this machine can run the TensorRT backend, and if not, why (a sentence for the user)."""

    available: bool
    reason: str
    version: str = ""


def tensorrt_availability(
    import_module: Callable[[str], Any] = importlib.import_module,
    cuda_available: Callable[[], bool] | None = None,
) -> TensorRTAvailability:
    """Check that ``tensorrt`` imports, looks like TensorRT and that a CUDA GPU is usable through PyTorch.

    ``import_module`` and ``cuda_available`` exist for tests; by default the real
    modules are imported. Never raises.
    """
    try:
        trt = import_module("tensorrt")
    except (ImportError, OSError) as exc:
        return TensorRTAvailability(False, f"TensorRT is not installed (import tensorrt: {exc}); {INSTALL_HINT}")
    version = str(getattr(trt, "__version__", ""))
    missing = [n for n in ("Builder", "OnnxParser", "Runtime") if not hasattr(trt, n)]
    if missing or not version:
        return TensorRTAvailability(
            False,
            f"the installed 'tensorrt' module lacks {missing or ['__version__']}; reinstall it. {INSTALL_HINT}",
        )
    if tensorrt_major(version) < 8:
        return TensorRTAvailability(False, f"TensorRT {version} is too old; 8.0 or newer is needed", version)
    if cuda_available is None:
        try:
            torch = import_module("torch")
        except (ImportError, OSError) as exc:
            return TensorRTAvailability(False, f"PyTorch is needed for CUDA buffers ({exc}); {INSTALL_HINT}", version)
        cuda_available = torch.cuda.is_available
    try:
        has_cuda = bool(cuda_available())
    except Exception as exc:  # noqa: BLE001  (a broken driver raises anything from inside torch)
        return TensorRTAvailability(False, f"CUDA check failed ({exc}); check the NVIDIA driver", version)
    if not has_cuda:
        return TensorRTAvailability(
            False,
            f"TensorRT {version} is installed but no CUDA GPU is usable (no GPU, no driver, or a CPU-only "
            "PyTorch build)",
            version,
        )
    return TensorRTAvailability(True, f"TensorRT {version} with a CUDA GPU", version)


# --------------------------------------------------------------------------------------
# TensorRT proper (needs tensorrt + CUDA)
# --------------------------------------------------------------------------------------
def _import_tensorrt():
    avail = tensorrt_availability()
    if not avail.available:
        raise BackendUnavailableError(f"the tensorrt backend cannot run here: {avail.reason}")
    import tensorrt

    return tensorrt


def _fatal_for(plan: BuildPlan, exc: Exception) -> bool:
    """A model error in the plain fp32 engine is the model's fault: no other engine would do better."""
    return isinstance(exc, ModelError) and plan.engine_variant == "fp32"


def _cuda_index(device: str) -> int:
    if device in ("auto", "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    if device == "cpu":
        raise BackendUnavailableError("TensorRT runs on an NVIDIA GPU only; use onnxruntime or torch for device='cpu'")
    raise ConfigError(f"tensorrt device must be 'auto', 'cuda' or 'cuda:N', got {device!r}")


class TensorRTBackend(Backend):
    """``model.onnx`` compiled by TensorRT; see the module docstring for the engine cache.

    Options: ``device`` ("auto"|"cuda"|"cuda:N"), ``precision`` ("fp32"|"fp16"|"int8"),
    ``max_batch`` (largest batch the engine accepts; bigger batches are split),
    ``opt_batch`` (batch size TensorRT tunes for), ``workspace_mb``, ``cache_dir``
    (default :func:`default_engine_cache_dir`), ``calibration_dir`` (ImageFolder
    dataset, required for INT8), ``calibration_images`` (how many), ``rebuild``
    (ignore the cache), ``keep_engines`` (cache entries kept by pruning).
    """

    name = "tensorrt"
    OPTIONS = (
        "device",
        "precision",
        "max_batch",
        "opt_batch",
        "workspace_mb",
        "cache_dir",
        "calibration_dir",
        "calibration_images",
        "rebuild",
        "keep_engines",
    )

    def __init__(self, model_dir, metadata, *, trt, engine, key: EngineKey, device_index: int) -> None:
        import torch

        super().__init__(model_dir, metadata)
        self.device = f"cuda:{device_index}"
        self.precision = key.precision
        self.max_batch = key.max_batch
        self.key = key
        self.cache: EngineCacheResult | None = None
        self._engine = engine
        self._torch_device = torch.device("cuda", device_index)
        with torch.cuda.device(self._torch_device):
            self._context = engine.create_execution_context()
            if self._context is None:
                raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
            io_cls = TensorIO if hasattr(engine, "num_io_tensors") else BindingIO
            self._io = io_cls(trt, engine, self._context, metadata.input_name, metadata.output_name)
            self._check_io(trt)
            shape = (key.max_batch, *metadata.preprocess.input_shape)
            self._dev_in = torch.empty(shape, dtype=torch.float32, device=self._torch_device)
            self._dev_out = torch.empty(
                (key.max_batch, metadata.num_classes), dtype=torch.float32, device=self._torch_device
            )
            self._host_in = torch.empty(shape, dtype=torch.float32).pin_memory()
            self._host_out = torch.empty((key.max_batch, metadata.num_classes), dtype=torch.float32).pin_memory()
            self._stream = torch.cuda.Stream(device=self._torch_device)
            self._io.bind(self._dev_in.data_ptr(), self._dev_out.data_ptr(), metadata.output_name)

    def _check_io(self, trt) -> None:
        meta, io = self.metadata, self._io
        where = f"TensorRT engine for {self.model_dir}"
        if io.inputs != [meta.input_name] or io.outputs != [meta.output_name]:
            raise ModelError(
                f"{where}: tensors are inputs {io.inputs} / outputs {io.outputs}, metadata.json expects "
                f"[{meta.input_name!r}] / [{meta.output_name!r}]"
            )
        for name in (meta.input_name, meta.output_name):
            if io.dtypes[name] != trt.float32:
                raise ModelError(f"{where}: tensor {name!r} is {io.dtypes[name]}, expected float32")
        check_io_shape(where, list(io.in_shape), list(io.out_shape), meta)

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.precision}, max batch {self.max_batch})"

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        *,
        device: str = "auto",
        precision: str = "auto",
        max_batch: int = 8,
        opt_batch: int = 1,
        workspace_mb: int = 256,
        cache_dir: str | os.PathLike | None = None,
        calibration_dir: str | os.PathLike | None = None,
        calibration_images: int = 256,
        rebuild: bool = False,
        keep_engines: int = 8,
        **unknown: Any,
    ) -> TensorRTBackend:
        """Load (or build and cache) the best engine this TensorRT can make for ``model_dir`` and ``precision``.

        Engines are tried in the order :func:`~.trt_compat.plan_builds` gives (INT8 from the Q/DQ
        variant, FP16, implicit INT8 only where the API has calibrators and ``calibration_dir`` is
        given, fp32); a build that fails is passed over with its reason in :attr:`variant_reason`.
        Raises :class:`BackendUnavailableError` (no TensorRT/GPU, every build failed),
        :class:`ModelError` (inconsistent model) or :class:`ConfigError` (bad options).
        """
        check_options(cls.name, unknown, cls.OPTIONS)
        V.check_precision(precision)
        index = _cuda_index(device)
        trt = _import_tensorrt()
        import torch

        if index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"device cuda:{index} does not exist ({torch.cuda.device_count()} GPUs)")
        meta = cls.read_metadata(model_dir)
        check_onnx_integrity(Path(model_dir), meta)
        resolution = V.resolve(model_dir, meta, [V.INT8_QDQ, V.FP16, V.FP32])
        onnx_files = {c.variant: c.path for c in resolution.candidates}
        feats = features(trt)
        plans = plan_builds(
            feats, precision, list(onnx_files), calibration=calibration_dir is not None, missing=resolution.missing
        )
        settings = {
            "index": index,
            "max_batch": int(max_batch),
            "opt_batch": int(opt_batch),
            "workspace_bytes": int(workspace_mb) << 20,
            "cache": Path(cache_dir) if cache_dir is not None else default_engine_cache_dir(),
            "calibration_dir": calibration_dir,
            "calibration_images": calibration_images,
            "rebuild": rebuild,
        }

        def attempt(plan: BuildPlan) -> TensorRTBackend:
            return cls._load_plan(model_dir, meta, trt, plan, onnx_files[plan.onnx_variant], settings)

        backend, plan, failures = first_that_loads(plans.builds, attempt, fatal=_fatal_for)
        passed_over = plans.skipped + failures
        if backend is None:
            raise BackendUnavailableError(
                f"TensorRT {feats.version} could not build an engine for {model_dir}: "
                + "; ".join(passed_over)
                + "; use backend='onnxruntime'"
            )
        backend.variant = plan.engine_variant
        backend.variant_reason = f"serving the {plan.describe()} for precision={precision}" + (
            "; passed over " + "; ".join(passed_over) if passed_over else ""
        )
        if failures:
            log.warning("tensorrt: %s", backend.variant_reason)
        try:
            prune_engine_cache(settings["cache"], keep=keep_engines)
        except OSError as exc:
            log.warning("cannot prune engine cache %s: %s", settings["cache"], exc)
        return backend

    @classmethod
    def _load_plan(cls, model_dir, meta, trt, plan: BuildPlan, onnx_path: Path, settings: dict) -> TensorRTBackend:
        """Build (or take from the cache) the engine of ``plan`` and open it."""
        import torch

        index = settings["index"]
        calib_paths: list[Path] = []
        if plan.calibrator:
            calib_paths = _calibration.calibration_images(settings["calibration_dir"], settings["calibration_images"])
        try:
            major, minor = torch.cuda.get_device_capability(index)
            key = EngineKey(
                onnx_sha256=onnx_fingerprint(onnx_path),
                tensorrt_version=str(trt.__version__),
                gpu_name=torch.cuda.get_device_name(index),
                compute_capability=f"{major}.{minor}",
                precision=plan.precision,
                max_batch=settings["max_batch"],
                workspace_bytes=settings["workspace_bytes"],
                opt_batch=settings["opt_batch"],
                calibration_sha256=calibration_fingerprint(calib_paths) if calib_paths else "",
                variant=plan.engine_variant,
            )
            cache = settings["cache"]
            logger = make_logger(trt)
            runtime = trt.Runtime(logger)
            tdev = torch.device("cuda", index)

            def build() -> bytes:
                calibrator, calib_batch = None, 1
                if plan.calibrator:
                    calib_batch = min(key.max_batch, 8)
                    calibrator = make_calibrator(
                        trt,
                        calibration_batches(calib_paths, meta.preprocess, calib_batch),
                        calib_batch,
                        meta.preprocess.input_shape,
                        cache / f"{key.digest}{CALIB_SUFFIX}",
                        str(tdev),
                    )
                with torch.cuda.device(tdev):
                    return build_engine(trt, logger, onnx_path, meta, key, plan, calibrator, calib_batch)

            def deserialize(data: bytes):
                with torch.cuda.device(tdev):
                    return runtime.deserialize_cuda_engine(data)

            engine, result = load_or_build_engine(cache, key, build, deserialize, rebuild=settings["rebuild"])
            backend = cls(model_dir, meta, trt=trt, engine=engine, key=key, device_index=index)
            backend.cache = result
            backend._runtime = runtime
            backend._logger = logger
        except DliPerceptionError:
            raise
        except Exception as exc:  # TensorRT API differences must not crash auto selection
            raise BackendUnavailableError(
                f"TensorRT failed while loading the {plan.describe()} ({type(exc).__name__}: {exc})"
            ) from exc
        log.info(
            "loaded %s with %s (%s %s)",
            onnx_path,
            backend.describe(),
            "built engine" if result.built else "cached engine",
            result.engine_path,
        )
        return backend

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        n_total = batch.shape[0]
        out = np.empty((n_total, self.num_classes), dtype=np.float32)
        rest = tuple(batch.shape[1:])
        for start in range(0, n_total, self.max_batch):
            chunk = batch[start : start + self.max_batch]
            n = chunk.shape[0]
            with torch.cuda.device(self._torch_device), torch.cuda.stream(self._stream):
                self._host_in[:n].copy_(torch.from_numpy(chunk))
                self._dev_in[:n].copy_(self._host_in[:n], non_blocking=True)
                if not self._io.run((n, *rest), self._stream.cuda_stream):
                    raise BackendUnavailableError("TensorRT execution failed; see the TensorRT log")
                self._host_out[:n].copy_(self._dev_out[:n], non_blocking=True)
            self._stream.synchronize()
            out[start : start + n] = self._host_out[:n].numpy()
        return out

    def _release(self) -> None:
        self._io = None
        self._context = None
        self._engine = None
        self._dev_in = self._dev_out = self._host_in = self._host_out = None
