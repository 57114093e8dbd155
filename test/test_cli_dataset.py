"""``dli-perception dataset info|check|split`` on real datasets written with DatasetStore."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dli_perception import cli
from dli_perception.core.dataset import MANIFEST_NAME, DatasetStore

MODULE = "dli_perception.commands.dataset"


@pytest.fixture
def run(cli_run):
    """The real ``dli-perception`` main with the dataset command registered; returns (rc, stdout, stderr)."""
    assert MODULE in cli.COMMANDS
    return cli_run


def image(i: int, h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(i)
    return cv2.resize(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        for i in range(5):
            store.add(image(i), "cup")
        for i in range(5, 8):
            store.add(image(i, 10, 12), "ball")
    return root


def test_info_lists_classes_formats_and_sizes(run, dataset):
    rc, out, _ = run("dataset", "info", dataset)
    assert rc == 0
    assert f"dataset {dataset.resolve()}: 8 images in 2 classes" in out
    assert "  ball  3\n  cup   5\n" in out
    assert "formats: jpg 8" in out and "sizes:   30x20 5, 12x10 3" in out
    rc, out, _ = run("dataset", "info", dataset, "--json")
    info = json.loads(out)
    assert info["classes"] == {"ball": 3, "cup": 5} and info["images"] == 8 and info["consistent"]


def test_check_reports_without_repair_then_repairs(run, dataset):
    orphan = dataset / "cup" / "999999_orphan.jpg"
    ok, buf = cv2.imencode(".jpg", image(50))
    orphan.write_bytes(buf.tobytes())
    (dataset / "ball" / ".x.jpg.1234.tmp").write_bytes(b"half")
    rc, out, _ = run("dataset", "check", dataset, "--no-repair")
    assert rc == 1
    assert "adopted=1 [cup/999999_orphan.jpg]" in out and "temp_removed=1" in out and "not repaired" in out
    assert len((dataset / MANIFEST_NAME).read_text().splitlines()) == 8  # untouched
    rc, out, _ = run("dataset", "check", dataset)
    assert rc == 0 and "adopted=1" in out
    assert len((dataset / MANIFEST_NAME).read_text().splitlines()) == 9
    assert not (dataset / "ball" / ".x.jpg.1234.tmp").exists()
    rc, out, _ = run("dataset", "check", dataset)
    assert rc == 0 and "dataset is consistent" in out


def test_check_verify_finds_changed_files(run, dataset):
    victim = sorted((dataset / "ball").iterdir())[0]
    ok, buf = cv2.imencode(".jpg", image(77))
    victim.write_bytes(buf.tobytes())  # still a valid image, but not the one saved
    rc, out, _ = run("dataset", "check", dataset)
    assert rc == 0 and "dataset is consistent" in out  # without hashing nothing shows
    rc, out, err = run("dataset", "check", dataset, "--verify", "--no-repair")
    assert rc == 1 and f"hash_mismatch=1 [ball/{victim.name}]" in out and "files changed" in err


def test_check_refuses_a_dataset_a_recorder_holds(run, dataset):
    with DatasetStore(dataset):
        rc, _, err = run("dataset", "check", dataset)
    assert rc == 1
    assert err.strip().startswith("dli-perception dataset: error: ") and "already open for writing" in err
    assert len(err.strip().splitlines()) == 1


def test_split_is_stratified_reproducible_and_written(run, dataset, tmp_path):
    rc, out, _ = run("dataset", "split", dataset, "--val", "0.4", "--seed", "3", "--out", tmp_path / "s1.json")
    assert rc == 0
    assert "5 train, 3 validation" in out and "  ball: 2 train, 1 val\n  cup: 3 train, 2 val" in out
    rc, _, _ = run("dataset", "split", dataset, "--val", "0.4", "--seed", "3", "--out", tmp_path / "s2.json")
    s1, s2 = (json.loads((tmp_path / n).read_text()) for n in ("s1.json", "s2.json"))
    assert s1 == s2
    assert not set(s1["train"]) & set(s1["val"])
    files = {json.loads(line)["file"] for line in (dataset / MANIFEST_NAME).read_text().splitlines()}
    assert set(s1["train"]) | set(s1["val"]) == files
    rc, _, err = run("dataset", "split", dataset, "--val", "1.5")
    assert rc == 1 and "val_fraction must be in [0, 1)" in err


def test_missing_dataset_is_one_clear_line(run, tmp_path):
    rc, _, err = run("dataset", "info", tmp_path / "nothing")
    assert rc == 1
    assert err.strip() == f"dli-perception dataset: error: dataset directory {tmp_path / 'nothing'} does not exist"
