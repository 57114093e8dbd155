"""TensorRT 8.6 / 10.x / 11.x: feature detection, engine plans per precision, builder calls, fall-back order.

There is no GPU and no TensorRT on this machine, so these tests use FAKE ``tensorrt`` module
objects (:func:`fake_tensorrt`) that hold only the API names the real version has: using a name a
version removed (``BuilderFlag.FP16`` or ``int8_calibrator`` on 11.x) raises AttributeError just
as the real module would. They exercise the selection and builder-configuration code only; the
engines themselves are built by scripts/gpu_check.sh on a machine with a GPU.
"""

from __future__ import annotations

import types

import pytest

from dli_perception.core import variants as V
from dli_perception.core.backends.tensorrt import EngineKey
from dli_perception.core.backends.trt_compat import (
    BuildPlan,
    build_engine,
    features,
    first_that_loads,
    network_flags,
    plan_builds,
)
from dli_perception.core.modeldir import ModelMetadata
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.errors import BackendUnavailableError, ModelError

ALL = [V.INT8_QDQ, V.FP16, V.FP32]


def fake_tensorrt(version: str, builder_flags, network_flags_, *, calibrators: bool, calibration_profile: bool):
    """FAKE stand-in for the ``tensorrt`` module of one version: only the listed API exists. Records builder calls."""
    trt = types.ModuleType("fake_tensorrt")
    trt.__version__ = version
    trt.BuilderFlag = types.SimpleNamespace(**{name: i for i, name in enumerate(builder_flags)})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**{n: i for i, n in enumerate(network_flags_)})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.calls = calls = []

    slots = ["flags", "profiles", "pool", "calibration_profiles"] + (["int8_calibrator"] if calibrators else [])
    config_attrs = {
        "__slots__": tuple(slots),
        "set_flag": lambda self, flag: self.flags.append(flag),
        "set_memory_pool_limit": lambda self, pool, size: setattr(self, "pool", size),
        "add_optimization_profile": lambda self, p: self.profiles.append(p),
    }
    if calibration_profile:
        config_attrs["set_calibration_profile"] = lambda self, p: self.calibration_profiles.append(p)
    Config = type("IBuilderConfig", (), config_attrs)  # noqa: N806
    trt.IBuilderConfig = Config

    class Profile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger) -> None:
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return types.SimpleNamespace()

        def create_builder_config(self):
            config = Config()
            config.flags, config.profiles, config.calibration_profiles = [], [], []
            calls.append(("config", config))
            return config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build", config))
            return None if trt.fail_build else b"serialized engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger) -> None:
            pass

        def parse_from_file(self, path) -> bool:
            calls.append(("parse", path))
            return True

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, object
    trt.fail_build = False
    if calibrators:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
    return trt


def trt86():
    return fake_tensorrt("8.6.1.6", ["FP16", "INT8"], ["EXPLICIT_BATCH"], calibrators=True, calibration_profile=True)


def trt10():
    return fake_tensorrt(
        "10.3.0.26",
        ["FP16", "INT8", "BF16"],
        ["EXPLICIT_BATCH", "STRONGLY_TYPED"],
        calibrators=True,
        calibration_profile=True,
    )


def trt11(strongly_typed_flag: bool = True):
    flags = ["STRONGLY_TYPED"] if strongly_typed_flag else []
    return fake_tensorrt("11.0.0.1", ["REFIT", "DEBUG"], flags, calibrators=False, calibration_profile=False)


# -- feature detection ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, expected",
    [
        (trt86, dict(fp16_flag=True, int8_flag=True, strongly_typed=False, explicit_batch_flag=True, calibrator=True)),
        (trt10, dict(fp16_flag=True, int8_flag=True, strongly_typed=True, explicit_batch_flag=False, calibrator=True)),
        (
            trt11,
            dict(fp16_flag=False, int8_flag=False, strongly_typed=True, explicit_batch_flag=False, calibrator=False),
        ),
        (lambda: trt11(False), dict(fp16_flag=False, strongly_typed=True, calibrator=False)),
    ],
)
def test_features_are_detected_not_assumed(make, expected):
    f = features(make())
    for name, value in expected.items():
        assert getattr(f, name) == value, name


def test_features_of_an_empty_module_never_raise():
    f = features(types.ModuleType("empty"))
    assert not (f.fp16_flag or f.int8_flag or f.calibrator or f.calibration_profile)


# -- plans ----------------------------------------------------------------------------------------
def _kinds(plans):
    return [(p.engine_variant, p.onnx_variant, p.flags, p.strongly_typed) for p in plans.builds]


def test_auto_on_8_6_and_10_uses_the_flags_and_the_qdq_model():
    for make in (trt86, trt10):
        plans = plan_builds(features(make()), "auto", ALL)
        assert _kinds(plans) == [
            ("int8-qdq", V.INT8_QDQ, ("INT8", "FP16"), False),
            ("fp16", V.FP32, ("FP16",), False),
            ("fp32", V.FP32, (), False),
        ]


def test_auto_on_11_builds_strongly_typed_from_the_qdq_and_fp16_models():
    plans = plan_builds(features(trt11()), "auto", ALL)
    assert _kinds(plans) == [
        ("int8-qdq", V.INT8_QDQ, (), True),
        ("fp16-onnx", V.FP16, (), True),
        ("fp32", V.FP32, (), True),
    ]


def test_11_without_an_fp16_variant_says_how_to_add_it():
    plans = plan_builds(features(trt11()), "fp16", [V.FP32], missing={V.FP16: "metadata.json lists no fp16 variant"})
    assert [p.engine_variant for p in plans.builds] == ["fp32"]
    assert "no FP16 builder flag" in plans.skipped[0] and "lists no fp16 variant" in plans.skipped[0]


def test_implicit_calibration_only_where_the_api_has_it():
    old = plan_builds(features(trt86()), "int8", [V.FP32], calibration=True)
    assert [p.engine_variant for p in old.builds] == ["int8-calibrated", "fp16", "fp32"]
    assert old.builds[0].calibrator
    new = plan_builds(features(trt11()), "int8", [V.FP32], calibration=True)
    assert [p.engine_variant for p in new.builds] == ["fp32"]
    assert any("no implicit INT8 calibrators" in s for s in new.skipped)
    assert any("int8-qdq" in s for s in new.skipped)
    no_data = plan_builds(features(trt10()), "int8", [V.FP32])
    assert any("no calibration_dir" in s for s in no_data.skipped)


def test_explicit_precisions():
    assert [p.engine_variant for p in plan_builds(features(trt10()), "fp32", ALL).builds] == ["fp32"]
    assert [p.engine_variant for p in plan_builds(features(trt10()), "fp16", ALL).builds] == ["fp16", "fp32"]


# -- builder configuration --------------------------------------------------------------------------
META = ModelMetadata(classes=["a", "b"], preprocess=PreprocessConfig(size=32))
KEY = EngineKey(
    onnx_sha256="a" * 64,
    tensorrt_version="x",
    gpu_name="g",
    compute_capability="8.7",
    precision="int8",
    max_batch=4,
    workspace_bytes=64 << 20,
)


def _built_config(trt):
    return [c for c in trt.calls if c[0] == "build"][-1][1]


@pytest.mark.parametrize("make", [trt86, trt10, trt11, lambda: trt11(False)])
def test_every_planned_engine_configures_the_builder_with_names_this_version_has(make, tmp_path):
    trt = make()
    for plan in plan_builds(features(trt), "auto", ALL).builds:
        trt.calls.clear()
        assert build_engine(trt, None, tmp_path / "m.onnx", META, KEY, plan) == b"serialized engine"
        config = _built_config(trt)
        assert config.flags == [getattr(trt.BuilderFlag, name) for name in plan.flags]
        assert config.profiles[0].shapes["input"] == ((1, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32))
        assert ("create_network", network_flags(trt, features(trt), plan)) in trt.calls


def test_network_flags_per_version():
    qdq_strong = BuildPlan("int8-qdq", V.INT8_QDQ, "int8", strongly_typed=True)
    assert network_flags(trt86(), features(trt86()), BuildPlan("fp32", V.FP32, "fp32")) == 1 << 0  # EXPLICIT_BATCH
    assert network_flags(trt11(), features(trt11()), qdq_strong) == 1 << 0  # STRONGLY_TYPED
    assert network_flags(trt11(False), features(trt11(False)), qdq_strong) == 0  # strongly typed by default


def test_implicit_calibration_sets_the_calibrator_and_its_profile(tmp_path):
    trt = trt86()
    plan = plan_builds(features(trt), "int8", [V.FP32], calibration=True).builds[0]
    calibrator = object()
    build_engine(trt, None, tmp_path / "m.onnx", META, KEY, plan, calibrator, calibration_batch=2)
    config = _built_config(trt)
    assert config.int8_calibrator is calibrator
    assert config.calibration_profiles[0].shapes["input"][0] == (2, 3, 32, 32)


def test_a_calibrated_plan_on_11_would_fail_loudly_not_silently(tmp_path):
    # plan_builds never plans it on 11.x; were it forced, the missing API raises instead of building fp32
    trt = trt11()
    with pytest.raises(AttributeError):
        build_engine(
            trt,
            None,
            tmp_path / "m.onnx",
            META,
            KEY,
            BuildPlan("int8-calibrated", V.FP32, "int8", flags=("INT8",), calibrator=True),
        )


def test_a_failed_build_raises_backend_unavailable(tmp_path):
    trt = trt10()
    trt.fail_build = True
    with pytest.raises(BackendUnavailableError, match="failed to build the fp16 engine"):
        build_engine(trt, None, tmp_path / "m.onnx", META, KEY, BuildPlan("fp16", V.FP32, "fp16", flags=("FP16",)))


# -- fall-back order ----------------------------------------------------------------------------------
def test_first_that_loads_falls_back_engine_by_engine_and_says_why():
    plans = plan_builds(features(trt10()), "auto", ALL).builds

    def attempt(plan):
        if plan.engine_variant == "int8-qdq":
            raise BackendUnavailableError("parser: QuantizeLinear axis unsupported")
        return f"engine {plan.engine_variant}"

    result, plan, failures = first_that_loads(plans, attempt)
    assert result == "engine fp16" and plan.engine_variant == "fp16"
    assert failures == ["int8-qdq: build failed (BackendUnavailableError: parser: QuantizeLinear axis unsupported)"]

    def nothing_builds(plan):
        raise RuntimeError("out of memory")

    result, plan, failures = first_that_loads(plans, nothing_builds)
    assert result is None and plan is None and len(failures) == 3


def test_a_model_error_in_fp32_is_not_hidden_by_the_fall_back():
    plans = plan_builds(features(trt10()), "fp32", ALL).builds

    def bad(plan):
        raise ModelError("outputs 3 classes but metadata.json lists 2")

    with pytest.raises(ModelError):
        first_that_loads(plans, bad, fatal=lambda plan, exc: isinstance(exc, ModelError))
