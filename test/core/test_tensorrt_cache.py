"""TensorRT engine cache, availability and calibration data: everything that runs without a GPU."""

from __future__ import annotations

import dataclasses
import json
import os
import types

import cv2
import numpy as np
import pytest

from dli_perception.core.backends.calibration import calibration_batches, calibration_fingerprint, calibration_images
from dli_perception.core.backends.tensorrt import (
    CACHE_FORMAT,
    EngineKey,
    engine_paths,
    evict_engine,
    load_or_build_engine,
    lookup_engine,
    onnx_fingerprint,
    prune_engine_cache,
    store_engine,
    tensorrt_availability,
    tensorrt_major,
    validate_sidecar,
)
from dli_perception.core.preprocess import PreprocessConfig, preprocess_batch
from dli_perception.errors import BackendUnavailableError, ConfigError

BASE = {
    "onnx_sha256": "a" * 64,
    "tensorrt_version": "10.3.0.30",
    "gpu_name": "Orin",
    "compute_capability": "8.7",
    "precision": "fp16",
    "max_batch": 8,
    "workspace_bytes": 256 << 20,
}
# One changed value per field of the key (every field must be covered, see the test below).
CHANGES = {
    "onnx_sha256": "b" * 64,
    "tensorrt_version": "8.6.1",
    "gpu_name": "NVIDIA Tegra X1",
    "compute_capability": "5.3",
    "precision": "fp32",
    "max_batch": 4,
    "workspace_bytes": 512 << 20,
    "opt_batch": 2,
    "calibration_sha256": "c" * 64,
    "variant": "int8-qdq",
    "cache_format": CACHE_FORMAT + 1,
}


def key(**changes) -> EngineKey:
    return EngineKey(**{**BASE, **changes})


class Builder:
    """Stands in for the TensorRT build step (which needs a GPU): counts calls, returns distinct bytes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine #{self.calls} ".encode() * 1000


def identity(data: bytes) -> bytes:
    return data


# -- keys ------------------------------------------------------------------------------------
def test_same_inputs_give_the_same_key():
    assert key().digest == key().digest == EngineKey.from_dict(key().to_dict()).digest
    assert len(key().digest) == 64 and int(key().digest, 16) >= 0


def test_changes_table_covers_every_key_field():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(EngineKey)}


@pytest.mark.parametrize("field, value", sorted(CHANGES.items()))
def test_each_field_changes_the_key(field, value):
    assert key(**{field: value}).digest != key().digest


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"precision": "int4"}, "precision"),
        ({"max_batch": 0}, "max_batch"),
        ({"opt_batch": 9}, "opt_batch"),
        ({"workspace_bytes": 1000}, "workspace"),
        ({"onnx_sha256": ""}, "sha256"),
    ],
)
def test_invalid_keys_are_refused(changes, match):
    with pytest.raises(ConfigError, match=match):
        key(**changes)


def test_key_from_dict_refuses_missing_or_extra_fields():
    data = key().to_dict()
    with pytest.raises(ConfigError):
        EngineKey.from_dict({k: v for k, v in data.items() if k != "gpu_name"})
    with pytest.raises(ConfigError):
        EngineKey.from_dict({**data, "colour": "red"})


def test_onnx_fingerprint_follows_model_and_external_data(tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"graph v1")
    first = onnx_fingerprint(onnx)
    assert onnx_fingerprint(onnx) == first
    (tmp_path / "model.onnx.data").write_bytes(b"weights v1")
    with_data = onnx_fingerprint(onnx)
    assert with_data != first
    (tmp_path / "model.onnx.data").write_bytes(b"weights v2")
    assert onnx_fingerprint(onnx) not in (first, with_data)


def test_tensorrt_major():
    assert tensorrt_major("10.3.0.30") == 10 and tensorrt_major("8.6.1") == 8 and tensorrt_major("x") == 0


# -- cache -----------------------------------------------------------------------------------
def test_store_then_lookup_hits_and_leaves_no_temp_files(tmp_path):
    path = store_engine(tmp_path / "cache", key(), b"serialized engine")
    assert path == engine_paths(tmp_path / "cache", key())[0]
    found = lookup_engine(tmp_path / "cache", key())
    assert found.hit and found.engine_path.read_bytes() == b"serialized engine"
    sidecar = json.loads(found.sidecar_path.read_text())
    assert sidecar["key"] == key().to_dict() and sidecar["engine_bytes"] == len(b"serialized engine")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [f"{key().digest}.engine", f"{key().digest}.json"]
    )


def test_engine_is_built_once_then_reused_across_starts(tmp_path):
    build = Builder()
    first, r1 = load_or_build_engine(tmp_path, key(), build, identity)
    second, r2 = load_or_build_engine(tmp_path, key(), build, identity)  # a "restart"
    assert build.calls == 1 and r1.built and not r2.built and second == first


@pytest.mark.parametrize("field, value", sorted(CHANGES.items()))
def test_any_key_change_triggers_exactly_one_rebuild(tmp_path, field, value):
    build = Builder()
    load_or_build_engine(tmp_path, key(), build, identity)
    _, changed = load_or_build_engine(tmp_path, key(**{field: value}), build, identity)
    _, again = load_or_build_engine(tmp_path, key(**{field: value}), build, identity)
    assert build.calls == 2 and changed.built and not again.built


def test_rebuild_option_forces_a_build(tmp_path):
    build = Builder()
    load_or_build_engine(tmp_path, key(), build, identity)
    _, result = load_or_build_engine(tmp_path, key(), build, identity, rebuild=True)
    assert build.calls == 2 and result.built and result.reason == "rebuild requested"


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda eng, side: side.write_text("{not json"), "unreadable"),
        (lambda eng, side: side.unlink(), "no sidecar"),
        (lambda eng, side: eng.unlink(), "missing"),
        (lambda eng, side: eng.write_bytes(eng.read_bytes()[:100]), "truncated"),
        (lambda eng, side: eng.write_bytes(bytes(reversed(eng.read_bytes()))), "corrupt"),
        (
            lambda eng, side: side.write_text(json.dumps({"key": {**key().to_dict(), "precision": "fp32"}})),
            "precision",
        ),
        (
            lambda eng, side: side.write_text(json.dumps({"key": {**key().to_dict(), "colour": 1}})),
            "unexpected",
        ),
        (lambda eng, side: side.write_text("[]"), "no 'key'"),
    ],
    ids=[
        "bad-json",
        "no-sidecar",
        "no-engine",
        "truncated",
        "corrupt",
        "other-precision",
        "extra-field",
        "no-key",
    ],
)
def test_damaged_cache_entries_are_evicted_and_rebuilt(tmp_path, damage, reason):
    build = Builder()
    load_or_build_engine(tmp_path, key(), build, identity)
    engine_path, sidecar_path = engine_paths(tmp_path, key())
    damage(engine_path, sidecar_path)
    assert validate_sidecar(sidecar_path, key(), engine_path) is not None
    engine, result = load_or_build_engine(tmp_path, key(), build, identity)
    assert build.calls == 2 and result.built and reason in result.reason
    assert engine == engine_path.read_bytes() and lookup_engine(tmp_path, key()).hit


def test_lookup_evicts_an_invalid_entry(tmp_path):
    store_engine(tmp_path, key(), b"engine")
    engine_path, sidecar_path = engine_paths(tmp_path, key())
    sidecar_path.write_text("garbage")
    found = lookup_engine(tmp_path, key())
    assert not found.hit and not engine_path.exists() and not sidecar_path.exists()


def test_engine_that_fails_to_deserialize_is_rebuilt(tmp_path):
    build = Builder()
    load_or_build_engine(tmp_path, key(), build, identity)
    seen = []

    def picky(data: bytes):  # refuses the first engine, like a TensorRT that cannot read an old plan
        seen.append(data)
        return data if b"#2" in data else None

    engine, result = load_or_build_engine(tmp_path, key(), build, picky)
    assert build.calls == 2 and result.built and b"#2" in engine
    assert "deserialized" in result.reason


def test_build_failures_raise_backend_unavailable(tmp_path):
    with pytest.raises(BackendUnavailableError, match="no engine"):
        load_or_build_engine(tmp_path, key(), lambda: b"", identity)
    with pytest.raises(BackendUnavailableError, match="cannot deserialize"):
        load_or_build_engine(tmp_path, key(), Builder(), lambda data: None)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_cache_still_returns_the_engine(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    engine, result = load_or_build_engine(blocker, key(), Builder(), identity)
    assert engine.startswith(b"engine #1") and result.built and not result.cached


def test_evict_and_prune(tmp_path):
    keys = [key(max_batch=b) for b in (1, 2, 3, 4)]
    for age, k in enumerate(keys):
        store_engine(tmp_path, k, b"engine")
        engine_path, _ = engine_paths(tmp_path, k)
        os.utime(engine_path, (1_000_000 + age, 1_000_000 + age))
    lookup_engine(tmp_path, keys[0])  # a hit marks the oldest as recently used
    orphan = tmp_path / ("f" * 64 + ".json")
    orphan.write_text("{}")
    removed = prune_engine_cache(tmp_path, keep=2)
    assert orphan in removed
    remaining = sorted(p.name for p in tmp_path.glob("*.engine"))
    assert remaining == sorted(f"{k.digest}.engine" for k in (keys[0], keys[3]))
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert evict_engine(tmp_path, keys[0].digest) and not lookup_engine(tmp_path, keys[0]).hit
    assert prune_engine_cache(tmp_path / "absent") == []


# -- availability ----------------------------------------------------------------------------
def test_tensorrt_is_reported_unavailable_here_with_a_reason():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed on this machine")
    avail = tensorrt_availability()
    assert not avail.available
    assert "TensorRT is not installed" in avail.reason and "pip install tensorrt" in avail.reason


def _fake_tensorrt(version: str = "10.3.0") -> types.ModuleType:
    """A module with TensorRT's entry-point names, to exercise the checks that follow the import."""
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.Builder = mod.OnnxParser = mod.Runtime = object
    return mod


def test_availability_checks_after_the_import():
    fake = _fake_tensorrt()

    def importer(name):
        return fake

    assert tensorrt_availability(importer, cuda_available=lambda: True).available
    no_gpu = tensorrt_availability(importer, cuda_available=lambda: False)
    assert not no_gpu.available and "no CUDA GPU" in no_gpu.reason and no_gpu.version == "10.3.0"
    old = tensorrt_availability(lambda name: _fake_tensorrt("7.2.3"), cuda_available=lambda: True)
    assert not old.available and "too old" in old.reason
    broken = types.ModuleType("tensorrt")
    assert "lacks" in tensorrt_availability(lambda name: broken, cuda_available=lambda: True).reason

    def no_driver():
        raise RuntimeError("driver too old")

    assert "driver" in tensorrt_availability(importer, cuda_available=no_driver).reason


# -- INT8 calibration data ---------------------------------------------------------------------
@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    counts = {"a": 5, "b": 2, "c": 3}
    for cls, n in counts.items():
        (tmp_path / cls).mkdir()
        for i in range(n):
            img = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / cls / f"{i:03d}.png"), img)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    return tmp_path


def test_calibration_images_round_robin_across_classes(dataset):
    chosen = calibration_images(dataset, max_images=6)
    assert [f"{p.parent.name}/{p.name}" for p in chosen] == [
        "a/000.png",
        "b/000.png",
        "c/000.png",
        "a/001.png",
        "b/001.png",
        "c/001.png",
    ]
    assert len(calibration_images(dataset, max_images=100)) == 10
    with pytest.raises(ConfigError):
        calibration_images(dataset / "missing")
    with pytest.raises(ConfigError, match="no images"):
        calibration_images(dataset / ".hidden")


def test_calibration_batches_use_the_shared_preprocessing(dataset):
    cfg = PreprocessConfig(size=32)
    paths = calibration_images(dataset, max_images=10)
    batches = list(calibration_batches(paths, cfg, batch_size=4))
    assert [b.shape for b in batches] == [(4, 3, 32, 32)] * 2  # the last 2 images do not fill a batch
    rgb = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths[:4]]
    np.testing.assert_array_equal(batches[0], preprocess_batch(rgb, cfg))


def test_calibration_skips_unreadable_images(dataset):
    paths = calibration_images(dataset, max_images=4)
    paths[1].write_bytes(b"not a png")
    batches = list(calibration_batches(paths, PreprocessConfig(size=32), batch_size=3))
    assert len(batches) == 1


def test_calibration_fingerprint_changes_with_the_images(dataset):
    paths = calibration_images(dataset)
    before = calibration_fingerprint(paths)
    assert calibration_fingerprint(paths) == before
    paths[0].write_bytes(paths[1].read_bytes())
    assert calibration_fingerprint(paths) != before
