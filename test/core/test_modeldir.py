"""Model directory metadata: written, read back, and refused when its files disagree."""

from __future__ import annotations

import json

import pytest

from dli_perception.core.modeldir import ModelMetadata, load_metadata, write_metadata_files
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.errors import ModelError


def _model_dir(tmp_path, classes=("free", "blocked")):
    meta = ModelMetadata(classes=list(classes), preprocess=PreprocessConfig(size=64), weights_source="none")
    write_metadata_files(tmp_path, meta)
    (tmp_path / "model.onnx").write_bytes(b"placeholder")  # load_metadata only checks presence
    return meta


def test_round_trip(tmp_path):
    meta = _model_dir(tmp_path)
    loaded = load_metadata(tmp_path)
    assert loaded.classes == ["free", "blocked"] and loaded.preprocess == meta.preprocess
    raw = json.loads((tmp_path / "metadata.json").read_text())
    assert raw["num_classes"] == 2 and raw["input_shape"] == [-1, 3, 64, 64]
    assert (tmp_path / "labels.txt").read_text() == "free\nblocked\n"


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: (d / "metadata.json").write_text("{half"), "not valid JSON"),
        (lambda d: (d / "metadata.json").unlink(), "missing"),
        (lambda d: (d / "model.onnx").unlink(), "model.onnx"),
        (lambda d: (d / "labels.txt").write_text("free\nblocked\nextra\n"), "labels.txt"),
        (lambda d: _edit(d, num_classes=3), "num_classes=3"),
        (lambda d: _edit(d, classes=["a", "a"]), "duplicates"),
        (lambda d: _edit(d, format_version=99), "format_version"),
        (lambda d: _edit(d, preprocess={"size": 64, "bogus": 1}), "invalid"),
        (lambda d: _edit(d, drop="classes"), "classes"),
    ],
)
def test_inconsistent_model_dirs_are_refused(tmp_path, corrupt, message):
    _model_dir(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(ModelError, match=message):
        load_metadata(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_metadata(tmp_path / "nope")


def _edit(d, drop=None, **changes):
    path = d / "metadata.json"
    raw = json.loads(path.read_text())
    raw.update(changes)
    if drop:
        raw.pop(drop)
    if "classes" in changes:
        (d / "labels.txt").unlink()
    path.write_text(json.dumps(raw))


def test_variants_round_trip_and_old_directories_without_them(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    _model_dir(old)
    raw = json.loads((old / "metadata.json").read_text())
    raw.pop("variants")  # what directories exported before variants existed hold
    (old / "metadata.json").write_text(json.dumps(raw))
    assert load_metadata(old).variants == {}

    new = tmp_path / "new"
    new.mkdir()
    meta = _model_dir(new)
    meta.variants = {"int8_qdq": {"file": "model.int8.onnx", "status": "refused", "agreement": 0.9}}
    write_metadata_files(new, meta)
    assert load_metadata(new).variants == meta.variants


@pytest.mark.parametrize("variants", [["int8_qdq"], {"int8_qdq": "accepted"}, "fp32"])
def test_malformed_variants_are_refused(tmp_path, variants):
    _model_dir(tmp_path)
    _edit(tmp_path, variants=variants)
    with pytest.raises(ModelError, match="variants"):
        load_metadata(tmp_path)
