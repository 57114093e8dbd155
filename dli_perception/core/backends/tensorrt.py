"""TensorRT backend: ``model.onnx`` -> serialized engine (FP32/FP16/INT8), cached on disk, run on CUDA streams.

Building an engine takes seconds on a desktop GPU and minutes on a Jetson, so the
serialized engine is cached as ``<cache_dir>/<key>.engine`` with a JSON sidecar.
The key is a sha256 over everything that makes an engine valid: the ONNX bytes,
the TensorRT version, the GPU (name and compute capability), the precision and the
engine variant (which ONNX variant, built how: see :mod:`.trt_compat`), the batch profile
and the workspace limit. A start with the same inputs reuses the
engine; a change in any of them gives a new key and a rebuild; a corrupt or
mismatching cache entry is evicted and rebuilt. Writes are atomic.

Everything around the engine (availability, keys, sidecars, lookup, eviction,
calibration data) is plain Python testable without a GPU; only
:class:`TensorRTBackend` and :func:`build_engine` need ``tensorrt`` and CUDA.
Device buffers are PyTorch CUDA tensors (no pycuda needed), allocated once for
``max_batch`` frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dli_perception.core import variants as V
from dli_perception.core.backends import calibration as _calibration
from dli_perception.core.backends.base import (
    PRECISIONS,
    Backend,
    check_io_shape,
    check_onnx_integrity,
    check_options,
)
from dli_perception.core.backends.calibration import calibration_batches, calibration_fingerprint
from dli_perception.core.backends.trt_compat import (
    ENGINE_VARIANTS,
    BuildPlan,
    build_engine,
    features,
    first_that_loads,
    make_calibrator,
    plan_builds,
)
from dli_perception.core.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from dli_perception.errors import BackendUnavailableError, ConfigError, DliPerceptionError, ModelError

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Version of the cache layout and key; bump it to invalidate every cached engine."""

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
CALIB_SUFFIX = ".calib"
CACHE_ENV = "DLI_PERCEPTION_ENGINE_CACHE"

INSTALL_HINT = (
    "on a Jetson TensorRT comes with JetPack (apt install python3-libnvinfer, then use the system Python "
    "or a venv with --system-site-packages); on a desktop with an NVIDIA GPU `pip install tensorrt`; "
    "PyTorch with CUDA is needed too (device buffers)"
)

T = TypeVar("T")


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


def tensorrt_major(version: str) -> int:
    """Major number of a TensorRT version string ("10.3.0.30" -> 10); 0 when unparsable."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


# --------------------------------------------------------------------------------------
# Cache keys and sidecars
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on; :attr:`digest` names its cache file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    max_batch: int
    workspace_bytes: int
    opt_batch: int = 1
    calibration_sha256: str = ""
    variant: str = "fp32"
    cache_format: int = CACHE_FORMAT

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.variant not in ENGINE_VARIANTS:
            raise ConfigError(f"engine variant must be one of {ENGINE_VARIANTS}, got {self.variant!r}")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        if not isinstance(self.opt_batch, int) or not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"opt_batch must be in [1, max_batch={self.max_batch}], got {self.opt_batch!r}")
        if not isinstance(self.workspace_bytes, int) or self.workspace_bytes < 1 << 20:
            raise ConfigError(f"workspace must be at least 1 MiB, got {self.workspace_bytes!r} bytes")
        if not self.onnx_sha256:
            raise ConfigError("EngineKey needs the ONNX model's sha256")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        """Inverse of :meth:`to_dict`; :class:`ConfigError` for missing or unknown fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"engine key must have exactly the fields {sorted(names)}, got {got}")
        return cls(**data)

    @property
    def digest(self) -> str:
        """sha256 over the canonical JSON of all fields (hex, 64 chars)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def onnx_fingerprint(onnx_path: str | os.PathLike) -> str:
    """sha256 of ``model.onnx``, extended with its external-data file (``model.onnx.data``) when present."""
    onnx_path = Path(onnx_path)
    digest = sha256_file(onnx_path)
    data = onnx_path.with_name(onnx_path.name + ".data")
    if data.is_file():
        digest = hashlib.sha256(f"{digest}:{sha256_file(data)}".encode()).hexdigest()
    return digest


def default_engine_cache_dir() -> Path:
    """``$DLI_PERCEPTION_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/dli_perception/engines`` (``~/.cache`` default)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dli_perception" / "engines"


def engine_paths(cache_dir: str | os.PathLike, key: EngineKey) -> tuple[Path, Path]:
    """``(<cache_dir>/<digest>.engine, <cache_dir>/<digest>.json)``."""
    cache_dir = Path(cache_dir)
    return cache_dir / f"{key.digest}{ENGINE_SUFFIX}", cache_dir / f"{key.digest}{SIDECAR_SUFFIX}"


def validate_sidecar(sidecar_path: Path, key: EngineKey, engine_path: Path) -> str | None:
    """Why the cached engine for ``key`` must not be used, or ``None`` when sidecar and engine check out.

    Checks: sidecar present and valid JSON, every key field equal, engine present
    with the recorded size and sha256 (a truncated or altered engine is never loaded).
    """
    try:
        data = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no sidecar beside the engine"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"sidecar is unreadable ({exc})"
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        return "sidecar has no 'key' object"
    expected = key.to_dict()
    diffs = [
        f"{name}: cached {data['key'].get(name)!r} != wanted {value!r}"
        for name, value in expected.items()
        if data["key"].get(name) != value
    ]
    extra = sorted(set(data["key"]) - set(expected))
    if diffs or extra:
        return "sidecar does not match (" + "; ".join(diffs + [f"unexpected field {e}" for e in extra]) + ")"
    if data.get("digest") != key.digest:
        return "sidecar digest does not match its key"
    try:
        size = engine_path.stat().st_size
    except FileNotFoundError:
        return "engine file is missing"
    if size != data.get("engine_bytes"):
        return f"engine file has {size} bytes, sidecar recorded {data.get('engine_bytes')} (truncated?)"
    if sha256_file(engine_path) != data.get("engine_sha256"):
        return "engine file content differs from the sidecar's sha256 (corrupt)"
    return None


@dataclass(frozen=True)
class CacheLookup:
    """Result of :func:`lookup_engine`: ``hit`` or the ``reason`` it missed."""

    hit: bool
    engine_path: Path
    sidecar_path: Path
    reason: str


def evict_engine(cache_dir: str | os.PathLike, digest: str) -> list[Path]:
    """Delete the engine, sidecar and calibration cache named ``digest``; returns what was removed."""
    removed = []
    for suffix in (SIDECAR_SUFFIX, ENGINE_SUFFIX, CALIB_SUFFIX):
        path = Path(cache_dir) / f"{digest}{suffix}"
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def lookup_engine(cache_dir: str | os.PathLike, key: EngineKey) -> CacheLookup:
    """Find a valid cached engine for ``key``; an invalid entry is evicted so it gets rebuilt."""
    engine_path, sidecar_path = engine_paths(cache_dir, key)
    if not engine_path.exists() and not sidecar_path.exists():
        return CacheLookup(False, engine_path, sidecar_path, "no cached engine for this key")
    reason = validate_sidecar(sidecar_path, key, engine_path)
    if reason is None:
        try:
            os.utime(engine_path)  # mark as recently used for prune_engine_cache
        except OSError:
            pass
        return CacheLookup(True, engine_path, sidecar_path, "cached engine is valid")
    log.warning("evicting cached TensorRT engine %s: %s", engine_path.name, reason)
    evict_engine(cache_dir, key.digest)
    return CacheLookup(False, engine_path, sidecar_path, reason)


def store_engine(cache_dir: str | os.PathLike, key: EngineKey, engine: bytes) -> Path:
    """Write the engine, then its sidecar, each atomically; returns the engine path.

    The sidecar goes last, so a crash in between leaves an engine without sidecar,
    which :func:`lookup_engine` treats as a miss.
    """
    if not engine:
        raise ConfigError("refusing to cache an empty engine")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path, sidecar_path = engine_paths(cache_dir, key)
    atomic_write_bytes(engine_path, engine)
    sidecar = {
        "key": key.to_dict(),
        "digest": key.digest,
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_bytes": len(engine),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return engine_path


def prune_engine_cache(cache_dir: str | os.PathLike, keep: int = 8) -> list[Path]:
    """Keep the ``keep`` most recently used engines, delete older ones and orphan sidecars; returns removed."""
    cache_dir = Path(cache_dir)
    if keep < 0:
        raise ConfigError(f"keep must be >= 0, got {keep}")
    if not cache_dir.is_dir():
        return []
    engines = sorted(cache_dir.glob(f"*{ENGINE_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed: list[Path] = []
    for old in engines[keep:]:
        removed += evict_engine(cache_dir, old.name[: -len(ENGINE_SUFFIX)])
    for sidecar in cache_dir.glob(f"*{SIDECAR_SUFFIX}"):
        if not sidecar.with_suffix(ENGINE_SUFFIX).exists():
            removed += evict_engine(cache_dir, sidecar.name[: -len(SIDECAR_SUFFIX)])
    return removed


@dataclass(frozen=True)
class EngineCacheResult:
    """How :func:`load_or_build_engine` got its engine: from the cache or ``built``, and why."""

    built: bool
    engine_path: Path
    reason: str
    cached: bool = True


def load_or_build_engine(
    cache_dir: str | os.PathLike,
    key: EngineKey,
    build: Callable[[], bytes],
    deserialize: Callable[[bytes], T | None],
    *,
    rebuild: bool = False,
) -> tuple[T, EngineCacheResult]:
    """Deserialize the cached engine for ``key``, or ``build()`` one, store it and deserialize that.

    ``build`` runs exactly when there is no valid cache entry (or ``rebuild``), and
    again when a cached engine fails to deserialize. An unwritable cache directory
    only costs the cache (logged). Raises :class:`BackendUnavailableError` when the
    build returns nothing or its engine cannot be deserialized.
    """
    engine_path, _ = engine_paths(cache_dir, key)
    if rebuild:
        evict_engine(cache_dir, key.digest)
        reason = "rebuild requested"
    else:
        lookup = lookup_engine(cache_dir, key)
        reason = lookup.reason
        if lookup.hit:
            engine = deserialize(engine_path.read_bytes())
            if engine is not None:
                return engine, EngineCacheResult(False, engine_path, reason)
            reason = "cached engine could not be deserialized"
            log.warning("evicting %s: %s", engine_path.name, reason)
            evict_engine(cache_dir, key.digest)
    log.info("building TensorRT engine %s (%s); this takes minutes on a Jetson", engine_path.name, reason)
    data = build()
    if not data:
        raise BackendUnavailableError("TensorRT returned no engine; see the TensorRT log messages above")
    cached = True
    try:
        store_engine(cache_dir, key, bytes(data))
    except OSError as exc:
        cached = False
        log.warning("cannot cache the TensorRT engine in %s (%s); it will be rebuilt next start", cache_dir, exc)
    engine = deserialize(bytes(data))
    if engine is None:
        evict_engine(cache_dir, key.digest)
        raise BackendUnavailableError("TensorRT built an engine it cannot deserialize; check the TensorRT log")
    return engine, EngineCacheResult(True, engine_path, reason, cached)


# --------------------------------------------------------------------------------------
# TensorRT proper (needs tensorrt + CUDA)
# --------------------------------------------------------------------------------------
def _import_tensorrt():
    avail = tensorrt_availability()
    if not avail.available:
        raise BackendUnavailableError(f"the tensorrt backend cannot run here: {avail.reason}")
    import tensorrt

    return tensorrt


def _make_logger(trt):
    """A TensorRT logger that forwards to Python logging (so ROS nodes see build messages)."""
    sev = trt.ILogger.Severity
    levels = {
        sev.INTERNAL_ERROR: logging.CRITICAL,
        sev.ERROR: logging.ERROR,
        sev.WARNING: logging.WARNING,
        sev.INFO: logging.DEBUG,
        sev.VERBOSE: logging.DEBUG,
    }

    class _Bridge(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

    return _Bridge()


class _TensorIO:
    """Named-tensor execution (TensorRT >= 8.5): set_input_shape / set_tensor_address / execute_async_v3."""

    def __init__(self, trt, engine, context, in_name: str, out_name: str) -> None:
        self.context, self.in_name = context, in_name
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) != mode]
        self.in_shape = tuple(engine.get_tensor_shape(in_name)) if in_name in self.inputs else ()
        self.out_shape = tuple(engine.get_tensor_shape(out_name)) if out_name in self.outputs else ()
        self.dtypes = {n: engine.get_tensor_dtype(n) for n in names}

    def bind(self, in_ptr: int, out_ptr: int, out_name: str) -> None:
        self.context.set_tensor_address(self.in_name, in_ptr)
        self.context.set_tensor_address(out_name, out_ptr)

    def run(self, shape: tuple[int, ...], stream_handle: int) -> bool:
        self.context.set_input_shape(self.in_name, shape)
        return bool(self.context.execute_async_v3(stream_handle))


class _BindingIO:
    """Binding-index execution for TensorRT 8.0-8.4: set_binding_shape / execute_async_v2."""

    def __init__(self, trt, engine, context, in_name: str, out_name: str) -> None:
        self.context = context
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        self.inputs = [n for i, n in enumerate(names) if engine.binding_is_input(i)]
        self.outputs = [n for i, n in enumerate(names) if not engine.binding_is_input(i)]
        self.in_index = names.index(in_name) if in_name in names else -1
        self.out_index = names.index(out_name) if out_name in names else -1
        self.in_shape = tuple(engine.get_binding_shape(self.in_index)) if self.in_index >= 0 else ()
        self.out_shape = tuple(engine.get_binding_shape(self.out_index)) if self.out_index >= 0 else ()
        self.dtypes = {n: engine.get_binding_dtype(i) for i, n in enumerate(names)}
        self.bindings = [0] * len(names)

    def bind(self, in_ptr: int, out_ptr: int, out_name: str) -> None:
        self.bindings[self.in_index] = in_ptr
        self.bindings[self.out_index] = out_ptr

    def run(self, shape: tuple[int, ...], stream_handle: int) -> bool:
        self.context.set_binding_shape(self.in_index, shape)
        return bool(self.context.execute_async_v2(self.bindings, stream_handle))


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
            io_cls = _TensorIO if hasattr(engine, "num_io_tensors") else _BindingIO
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
            logger = _make_logger(trt)
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
