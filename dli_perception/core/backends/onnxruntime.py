"""ONNX Runtime backend: ``model.onnx`` (or its INT8 Q/DQ variant) on the TensorRT, CUDA or CPU execution provider.

Providers are taken from what the installed ``onnxruntime`` offers, fastest
first (TensorRT EP, CUDA EP, CPU), or forced with ``providers=`` or
``device="cpu"|"cuda"``. Graph optimisation is at ``ORT_ENABLE_ALL``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dli_perception.core import variants as V
from dli_perception.core.backends.base import Backend, check_io_shape, check_onnx_integrity, check_options
from dli_perception.errors import BackendUnavailableError, ConfigError, ModelError

log = logging.getLogger(__name__)

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
GPU_PROVIDERS = (TRT_EP, CUDA_EP)
DEVICES = ("auto", "cpu", "cuda")

INSTALL_HINT = (
    "install it with `pip install onnxruntime` (CPU) or `pip install onnxruntime-gpu` (CUDA/TensorRT); "
    "on a Jetson use the onnxruntime-gpu wheel built for your JetPack"
)


def import_onnxruntime():
    """Import ``onnxruntime`` or raise :class:`BackendUnavailableError` saying what to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(f"the onnxruntime backend needs onnxruntime: {INSTALL_HINT}") from exc
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime ([] when it is not installed)."""
    try:
        return list(import_onnxruntime().get_available_providers())
    except BackendUnavailableError:
        return []


def plan_providers(available: Sequence[str], device: str = "auto", providers: Sequence[str] | None = None) -> list[str]:
    """Provider list to ask ONNX Runtime for, fastest first.

    ``providers`` forces an exact list (each must be available); otherwise ``device``
    picks: ``auto`` = every available GPU provider then CPU, ``cuda`` = GPU providers
    (at least one required) then CPU, ``cpu`` = CPU only. Raises
    :class:`BackendUnavailableError` for a provider or device this onnxruntime lacks.
    """
    if device not in DEVICES:
        raise ConfigError(f"onnxruntime device must be one of {DEVICES}, got {device!r}")
    if providers is not None:
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        providers = list(providers)
        if not providers:
            raise ConfigError("providers must name at least one execution provider")
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"onnxruntime execution provider(s) {missing} are not available here (available: "
                f"{list(available)}); {INSTALL_HINT}"
            )
        return providers
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cuda" and not gpu:
        raise BackendUnavailableError(
            f"device='cuda' asked for, but this onnxruntime only offers {list(available)}; {INSTALL_HINT}"
        )
    plan = [] if device == "cpu" else gpu
    if CPU_EP in available:
        plan.append(CPU_EP)
    if not plan:
        raise BackendUnavailableError(f"onnxruntime offers no usable execution provider ({list(available)})")
    return plan


def _provider_options(provider: str, options: dict[str, Any]) -> dict[str, Any]:
    if provider == TRT_EP:
        from dli_perception.core.backends.tensorrt import default_engine_cache_dir

        opts: dict[str, Any] = {"trt_fp16_enable": False}
        cache_dir = Path(options.get("trt_cache_dir") or default_engine_cache_dir() / "onnxruntime-trt")
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("no TensorRT EP engine cache (%s: %s); engines are rebuilt every start", cache_dir, exc)
        else:
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        return opts
    return {}


def _is_model_error(ort, exc: BaseException) -> bool:
    """Whether an InferenceSession failure is the model's fault rather than the provider's."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    names = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel")
    classes = tuple(getattr(state, n) for n in names if state is not None and hasattr(state, n))
    return bool(classes) and isinstance(exc, classes)


def _wanted_variants(precision: str, cpu_only: bool, notes: list[str]) -> list[str]:
    """Variants to try, best first: the INT8 Q/DQ model on the CPU provider for ``auto``/``int8``, then fp32."""
    if precision in ("auto", "int8") and cpu_only:
        return [V.INT8_QDQ, V.FP32]
    if precision == "fp16":
        notes.append("fp16 applies to the tensorrt backend; onnxruntime serves fp32")
    elif precision == "auto":
        notes.append("GPU providers serve the fp32 model; the INT8 Q/DQ variant is for the CPU provider")
    return [V.FP32]


def _check_session(session, meta, where: str) -> None:
    """The session's input/output names, types and shapes against the metadata; ModelError if they differ."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [meta.input_name]:
        raise ModelError(f"{where}: inputs are {[i.name for i in inputs]}, metadata.json expects [{meta.input_name!r}]")
    out_names = [o.name for o in outputs]
    if meta.output_name not in out_names:
        raise ModelError(f"{where}: outputs are {out_names}, metadata.json expects {meta.output_name!r}")
    if inputs[0].type != "tensor(float)":
        raise ModelError(f"{where}: input type is {inputs[0].type}, expected tensor(float)")
    output = outputs[out_names.index(meta.output_name)]
    check_io_shape(where, inputs[0].shape, output.shape, meta)


class OnnxRuntimeBackend(Backend):
    """``model.onnx`` through an ``onnxruntime.InferenceSession``.

    Options: ``device`` ("auto"|"cpu"|"cuda"), ``providers`` (exact list, overrides
    ``device``), ``intra_op_threads`` / ``inter_op_threads`` (0 = ONNX Runtime's
    choice), ``spin`` (let idle thread-pool workers spin for the next run instead of sleeping; off:
    on a small CPU they take the core the node's executor and transport threads need),
    ``io_binding`` (bind input/output buffers explicitly), ``trt_cache_dir``
    (engine cache of the TensorRT execution provider; default under
    :func:`~dli_perception.core.backends.tensorrt.default_engine_cache_dir`).
    ``precision`` (default ``auto``) picks the model directory's variant: ``auto`` and
    ``int8`` serve ``model.int8.onnx`` (INT8 Q/DQ, written at export when it passed its agreement
    check) on the CPU provider; when it is absent, refused, corrupt or does not load, fp32 serves
    and :attr:`variant_reason` says why. ``fp16`` is a TensorRT precision: fp32 serves.
    """

    name = "onnxruntime"
    OPTIONS = (
        "device",
        "providers",
        "intra_op_threads",
        "inter_op_threads",
        "io_binding",
        "trt_cache_dir",
        "precision",
        "spin",
    )

    def __init__(self, model_dir, metadata, session, io_binding: bool) -> None:
        super().__init__(model_dir, metadata)
        self._session = session
        self.providers: list[str] = list(session.get_providers())
        self.device = "cuda" if any(p in GPU_PROVIDERS for p in self.providers) else "cpu"
        self.precision = "fp32"
        self.notes: list[str] = []
        self._io_binding = io_binding
        self._input_name = metadata.input_name
        self._output_name = metadata.output_name

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.precision}, {'+'.join(self.providers)})"

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        *,
        device: str = "auto",
        providers: Sequence[str] | str | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        spin: bool = False,
        io_binding: bool = False,
        trt_cache_dir: str | os.PathLike | None = None,
        precision: str = "auto",
        **unknown: Any,
    ) -> OnnxRuntimeBackend:
        """Open the model directory's best usable variant; raises ModelError (bad model) or BackendUnavailableError."""
        check_options(cls.name, unknown, cls.OPTIONS)
        V.check_precision(precision)
        if precision == "int8":
            if device == "cuda" or providers is not None:
                raise ConfigError("onnxruntime int8 runs on the CPU provider; for INT8 on a GPU use backend tensorrt")
            device = "cpu"
        for key, value in (("intra_op_threads", intra_op_threads), ("inter_op_threads", inter_op_threads)):
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key} must be an integer >= 0 (0 = onnxruntime's default), got {value!r}")
        ort = import_onnxruntime()
        plan = plan_providers(ort.get_available_providers(), device, providers)
        forced = providers is not None or device == "cuda"
        meta = cls.read_metadata(model_dir)
        check_onnx_integrity(Path(model_dir), meta)
        notes: list[str] = []
        resolution = V.resolve(model_dir, meta, _wanted_variants(precision, plan == [CPU_EP], notes))

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = intra_op_threads
        so.inter_op_num_threads = inter_op_threads
        so.log_severity_level = 3  # errors only: provider fall-backs are reported by us
        # Spinning thread-pool workers keep burning a core after each run, waiting for the next one;
        # on a small CPU that core is the one the node's executor and transport threads need.
        for pool in ("intra_op", "inter_op"):
            so.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if spin else "0")
        popts = {"trt_cache_dir": trt_cache_dir}

        def open_session(plist: list[str]):
            return ort.InferenceSession(
                str(onnx_path), sess_options=so, providers=[(p, _provider_options(p, popts)) for p in plist]
            )

        for candidate in resolution.candidates[:-1]:  # reduced-precision variants; fp32 is the last
            onnx_path = candidate.path
            try:
                session = open_session(plan)
                _check_session(session, meta, str(onnx_path))
                break
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own types; fp32 still serves
                resolution.skipped.append(
                    f"{candidate.variant}: onnxruntime cannot run {onnx_path.name} ({type(exc).__name__}: "
                    f"{str(exc)[:200]})"
                )
        else:
            candidate = resolution.candidates[-1]
            onnx_path = candidate.path
            session = cls._open_fp32(ort, open_session, plan, forced, onnx_path, notes)
            _check_session(session, meta, str(onnx_path))
        backend = cls(model_dir, meta, session, io_binding=io_binding)
        backend.precision = "int8" if candidate.variant == V.INT8_QDQ else "fp32"
        backend.variant = candidate.variant
        backend.variant_reason = V.serving_reason(precision, candidate, resolution.skipped)
        backend.notes = notes
        wanted_int8 = precision in ("auto", "int8") and plan == [CPU_EP]
        if wanted_int8 and candidate.variant == V.FP32:
            (log.warning if precision == "int8" else log.info)("onnxruntime: %s", backend.variant_reason)
        log.info("loaded %s with %s", onnx_path, backend.describe())
        return backend

    @staticmethod
    def _open_fp32(ort, open_session, plan: list[str], forced: bool, onnx_path: Path, notes: list[str]):
        """The fp32 session on ``plan``, falling back from GPU providers to the CPU when they fail to start."""
        noted = len(notes)
        try:
            session = open_session(plan)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            if _is_model_error(ort, exc) or plan == [CPU_EP]:
                raise ModelError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
            if forced:
                raise BackendUnavailableError(f"onnxruntime could not start providers {plan}: {exc}") from exc
            notes.append(f"GPU providers {plan[:-1]} failed ({exc}); fell back to CPU")
            log.warning("onnxruntime: %s", notes[-1])
            try:
                session = open_session([CPU_EP])
            except Exception as exc2:
                raise ModelError(f"onnxruntime cannot load {onnx_path}: {exc2}") from exc2

        started = list(session.get_providers())
        dropped = [p for p in plan if p not in started]
        if dropped and len(notes) == noted:
            if forced and not any(p in GPU_PROVIDERS for p in started):
                raise BackendUnavailableError(
                    f"onnxruntime did not start {dropped} (CUDA/cuDNN libraries missing or no GPU); {INSTALL_HINT}"
                )
            notes.append(f"providers {dropped} did not start (missing CUDA/TensorRT libraries?); using {started}")
            log.warning("onnxruntime: %s", notes[-1])

        return session

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        if not self._io_binding:
            return self._session.run([self._output_name], {self._input_name: batch})[0]
        binding = self._session.io_binding()
        binding.bind_cpu_input(self._input_name, batch)
        binding.bind_output(self._output_name, "cuda" if self.device == "cuda" else "cpu")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _release(self) -> None:
        self._session = None
