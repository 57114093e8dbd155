"""TensorRT 8.6 to 11.x: what the installed API offers, which engines to build, and building them.

TensorRT changed its builder API twice in the versions a robot meets: 8.6 (JetPack 6) has
the FP16/INT8 builder flags, implicit INT8 calibrators and calibration profiles, and needs the
EXPLICIT_BATCH network flag; 10.x keeps the flags, deprecates the calibrators (10.1) and adds
strongly typed networks; 11.x removes the precision flags, the calibrators and calibration
profiles: a network takes its precisions from the ONNX types (strongly typed). So nothing
here names a TensorRT attribute at import, and :func:`features` finds out what exists with
``hasattr``. :func:`plan_builds` turns a requested precision and the model directory's
variants into engines to try, best first:

- INT8 from the Q/DQ variant (explicit quantization: every version; INT8+FP16 flags where
  they exist, a strongly typed network where they do not);
- FP16: the FP16 flag on the fp32 model where it exists, else the FP16 ONNX variant as a
  strongly typed network;
- INT8 with an implicit entropy calibrator, only for ``precision=int8`` with a calibration
  dataset and only where the API still has calibrators;
- fp32.

The backend builds them in that order and serves the first that builds, saying why the
others were passed over. Running an engine differs too: :class:`TensorIO` (named tensors,
8.5 and newer) and :class:`BindingIO` (binding indices, 8.0-8.4) give the backend one
interface to both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dli_perception.core import variants as V
from dli_perception.core.fsutil import atomic_write_bytes
from dli_perception.errors import BackendUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

ENGINE_VARIANTS = ("int8-qdq", "fp16", "fp16-onnx", "int8-calibrated", "fp32")
"""Engine kinds: part of the engine cache key."""


def tensorrt_major(version: str) -> int:
    """Major number of a TensorRT version string ("10.3.0.30" -> 10); 0 when unparsable."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed ``tensorrt`` module offers (found with ``hasattr``, never assumed from the version)."""

    version: str
    fp16_flag: bool
    int8_flag: bool
    strongly_typed: bool
    explicit_batch_flag: bool
    calibrator: bool
    calibration_profile: bool
    memory_pool_limit: bool

    @property
    def major(self) -> int:
        return tensorrt_major(self.version)


def features(trt: Any) -> TrtFeatures:
    """Feature-detect ``trt`` (the imported module); never raises."""
    flags = getattr(trt, "BuilderFlag", None)
    ndcf = getattr(trt, "NetworkDefinitionCreationFlag", None)
    config_cls = getattr(trt, "IBuilderConfig", None)
    version = str(getattr(trt, "__version__", ""))
    int8_flag = hasattr(flags, "INT8")
    return TrtFeatures(
        version=version,
        fp16_flag=hasattr(flags, "FP16"),
        int8_flag=int8_flag,
        # 11.x networks are strongly typed whether or not the flag is still spelled out
        strongly_typed=hasattr(ndcf, "STRONGLY_TYPED") or tensorrt_major(version) >= 11,
        explicit_batch_flag=hasattr(ndcf, "EXPLICIT_BATCH") and tensorrt_major(version) < 10,
        calibrator=int8_flag and hasattr(trt, "IInt8EntropyCalibrator2"),
        calibration_profile=hasattr(config_cls, "set_calibration_profile"),
        memory_pool_limit=hasattr(config_cls, "set_memory_pool_limit"),
    )


@dataclass(frozen=True)
class BuildPlan:
    """One engine to try: which ONNX variant, which builder flags, strongly typed or not, implicit calibration."""

    engine_variant: str
    onnx_variant: str
    precision: str
    flags: tuple[str, ...] = ()
    strongly_typed: bool = False
    calibrator: bool = False

    def describe(self) -> str:
        how = "strongly typed" if self.strongly_typed else ("flags " + "+".join(self.flags) if self.flags else "fp32")
        extra = ", implicit calibrator" if self.calibrator else ""
        return f"{self.engine_variant} engine from the {self.onnx_variant} ONNX ({how}{extra})"


@dataclass
class Plans:
    """Engines to try, best first, and why other precisions were not planned."""

    builds: list[BuildPlan] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan_builds(
    f: TrtFeatures,
    precision: str,
    variants: Sequence[str],
    calibration: bool = False,
    missing: dict[str, str] | None = None,
) -> Plans:
    """Engines to try for ``precision`` given the usable ONNX ``variants`` of the model directory.

    ``calibration`` says a calibration dataset was given (implicit INT8, ``precision=int8`` only);
    ``missing`` maps an unusable variant to the reason (from :func:`dli_perception.core.variants.resolve`).
    """
    V.check_precision(precision)
    have = set(variants)
    missing = missing or {}
    out = Plans()
    v = f"TensorRT {f.version}"

    def int8_qdq() -> None:
        if V.INT8_QDQ not in have:
            out.skipped.append(
                f"int8-qdq: {missing.get(V.INT8_QDQ, 'the model directory has no usable INT8 Q/DQ variant')}"
            )
        elif f.int8_flag:
            flags = ("INT8", "FP16") if f.fp16_flag else ("INT8",)
            out.builds.append(BuildPlan("int8-qdq", V.INT8_QDQ, "int8", flags=flags))
        elif f.strongly_typed:
            out.builds.append(BuildPlan("int8-qdq", V.INT8_QDQ, "int8", strongly_typed=True))
        else:
            out.skipped.append(f"int8-qdq: {v} has neither the INT8 flag nor strongly typed networks")

    def int8_calibrated() -> None:
        if not calibration:
            out.skipped.append("int8-calibrated: no calibration_dir given")
        elif not f.calibrator:
            out.skipped.append(f"int8-calibrated: {v} has no implicit INT8 calibrators (removed in 11.x)")
        else:
            flags = ("INT8", "FP16") if f.fp16_flag else ("INT8",)
            out.builds.append(BuildPlan("int8-calibrated", V.FP32, "int8", flags=flags, calibrator=True))

    def fp16() -> None:
        if f.fp16_flag:
            out.builds.append(BuildPlan("fp16", V.FP32, "fp16", flags=("FP16",)))
        elif f.strongly_typed and V.FP16 in have:
            out.builds.append(BuildPlan("fp16-onnx", V.FP16, "fp16", strongly_typed=True))
        elif f.strongly_typed:
            why = missing.get(V.FP16, f"the model directory has no usable fp16 variant; {V.ADD_HINT}")
            out.skipped.append(f"fp16: {v} has no FP16 builder flag (strongly typed only) and {why}")
        else:
            out.skipped.append(f"fp16: {v} has neither the FP16 flag nor strongly typed networks")

    def fp32() -> None:
        out.builds.append(BuildPlan("fp32", V.FP32, "fp32", strongly_typed=f.strongly_typed and not f.fp16_flag))

    steps = {
        "auto": (int8_qdq, fp16, fp32),
        "int8": (int8_qdq, int8_calibrated, fp16, fp32),
        "fp16": (fp16, fp32),
        "fp32": (fp32,),
    }[precision]
    for step in steps:
        step()
    return out


def first_that_loads(
    plans: Sequence[BuildPlan],
    attempt: Callable[[BuildPlan], T],
    fatal: Callable[[BuildPlan, Exception], bool] = lambda plan, exc: False,
) -> tuple[T | None, BuildPlan | None, list[str]]:
    """Try ``attempt(plan)`` in order; the first result with its plan, and why each earlier plan failed.

    An exception for which ``fatal(plan, exc)`` holds is re-raised (the model itself is bad).
    """
    failures: list[str] = []
    for plan in plans:
        try:
            return attempt(plan), plan, failures
        except Exception as exc:  # noqa: BLE001 - a failed build falls back to the next engine
            if fatal(plan, exc):
                raise
            failures.append(f"{plan.engine_variant}: build failed ({type(exc).__name__}: {str(exc)[:300]})")
            log.warning("TensorRT %s failed: %s", plan.describe(), failures[-1])
    return None, None, failures


def network_flags(trt: Any, f: TrtFeatures, plan: BuildPlan) -> int:
    """The ``create_network`` flags for ``plan`` on this TensorRT."""
    flags = 0
    ndcf = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if f.explicit_batch_flag:
        flags |= 1 << int(ndcf.EXPLICIT_BATCH)
    if plan.strongly_typed and hasattr(ndcf, "STRONGLY_TYPED"):
        flags |= 1 << int(ndcf.STRONGLY_TYPED)
    return flags


def make_calibrator(trt, batches: Iterator[np.ndarray], batch_size: int, shape, cache_file: Path, device: str):
    """An ``IInt8EntropyCalibrator2`` fed from ``batches``; its cache file is written atomically."""
    import torch

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = batches
            self._buffer = torch.empty((batch_size, *shape), dtype=torch.float32, device=device)
            self.count = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):
            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            self._buffer.copy_(torch.from_numpy(batch))
            torch.cuda.synchronize(self._buffer.device)
            self.count += 1
            return [int(self._buffer.data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            try:
                atomic_write_bytes(cache_file, bytes(cache))
            except OSError as exc:
                log.warning("cannot write INT8 calibration cache %s: %s", cache_file, exc)

    return _Calibrator()


def build_engine(
    trt,
    logger,
    onnx_path: Path,
    meta,
    key,
    plan: BuildPlan,
    calibrator=None,
    calibration_batch: int = 1,
) -> bytes:
    """Parse ``onnx_path`` and build the serialized engine ``plan`` describes for ``key`` (batch profile, workspace).

    Raises :class:`BackendUnavailableError` when the parser rejects the model (an operator this
    TensorRT lacks: other engines or backends may still run it) or the build fails.
    """
    f = features(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, f, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(
            f"TensorRT {f.version} cannot parse {onnx_path.name} ({errors or 'unknown error'}); an operator may be "
            "unsupported by this version"
        )
    config = builder.create_builder_config()
    if f.memory_pool_limit:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_bytes)
    else:  # TensorRT < 8.4
        config.max_workspace_size = key.workspace_bytes
    for name in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    c, s = 3, meta.preprocess.size
    profile = builder.create_optimization_profile()
    profile.set_shape(meta.input_name, (1, c, s, s), (key.opt_batch, c, s, s), (key.max_batch, c, s, s))
    config.add_optimization_profile(profile)
    if plan.calibrator:
        config.int8_calibrator = calibrator
        if f.calibration_profile:
            calib_profile = builder.create_optimization_profile()
            fixed = (calibration_batch, c, s, s)
            calib_profile.set_shape(meta.input_name, fixed, fixed, fixed)
            config.set_calibration_profile(calib_profile)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(
            f"TensorRT {f.version} failed to build the {plan.describe()}; see the TensorRT errors logged above"
        )
    log.info("built TensorRT %s in %.1f s", plan.describe(), time.monotonic() - started)
    return bytes(serialized)


def make_logger(trt):
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


class TensorIO:
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


class BindingIO:
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
