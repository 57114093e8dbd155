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


# -------------------------------------------------------------------------- regression and multi-label


def test_info_regression_shows_task_and_xy_spread(run, tmp_path):
    from dli_perception.core import synthetic

    entries = synthetic.make_xy_dataset(tmp_path / "xy", 15, size=32, seed=4)
    xs = np.array([e.xy[0] for e in entries])
    rc, out, _ = run("dataset", "info", tmp_path / "xy")
    assert rc == 0
    assert "15 regression images (XY targets), task regression" in out
    assert f"  x: mean {xs.mean():+.3f}  std {xs.std():.3f}  min {xs.min():+.3f}  max {xs.max():+.3f}" in out
    rc, out, _ = run("dataset", "info", tmp_path / "xy", "--json")
    info = json.loads(out)
    assert info["task"] == "regression" and info["classes"] == {"xy": 15}
    assert info["xy"]["x"]["mean"] == pytest.approx(xs.mean())
    assert info["xy"]["y"]["max"] == pytest.approx(max(e.xy[1] for e in entries))


def test_info_multilabel_shows_per_label_counts(run, tmp_path):
    root = tmp_path / "ml"
    with DatasetStore(root, known_labels=["ball", "cup", "shoe"]) as store:
        store.add(image(1), labels=["cup", "ball"])
        store.add(image(2), labels=["cup"])
        store.add(image(3), labels=[])
    rc, out, _ = run("dataset", "info", root)
    assert rc == 0
    assert "3 multi-label images, 2 labels in use, task multilabel" in out
    assert "  ball  1\n  cup   2\n" in out and "images showing none of the labels: 1" in out
    assert "declared labels (labels.txt): ball, cup, shoe; unused: shoe" in out
    info = json.loads(run("dataset", "info", root, "--json")[1])
    assert info["labels"] == {"ball": 1, "cup": 2} and info["no_labels"] == 1
    assert info["vocabulary"] == ["ball", "cup", "shoe"]


def test_split_lists_exactly_the_files_training_holds_out(run, tmp_path):
    from dli_perception.core import synthetic

    for name, make in (("xy", synthetic.make_xy_dataset), ("ml", synthetic.make_multilabel_dataset)):
        root = tmp_path / name
        make(root, 12, size=32, seed=2)
        rc, out, _ = run("dataset", "split", root, "--val", "0.25", "--seed", "5", "--out", tmp_path / f"{name}.json")
        assert rc == 0 and "9 train, 3 validation" in out
        with DatasetStore(root, readonly=True) as store:
            _, val = store.split(0.25, seed=5)
        listed = [line.split()[0] for line in out.split("held out for validation (3 files):\n")[1].splitlines()[:3]]
        assert listed == [e.file for e in val]
        saved = json.loads((tmp_path / f"{name}.json").read_text())
        assert saved["val"] == listed and saved["task"] == ("regression" if name == "xy" else "multilabel")
        entry = val[0]
        shown = (
            f"x {entry.xy[0]:+.4f} y {entry.xy[1]:+.4f}"
            if name == "xy"
            else "labels " + (",".join(entry.labels) or "(none)")
        )
        assert f"  {entry.file}  {shown}\n" in out


def test_check_reports_target_less_orphans(run, tmp_path):
    root = tmp_path / "xy"
    with DatasetStore(root) as store:
        store.add(image(1), xy=(0.1, 0.2))
        store.add(image(2), xy=(0.3, 0.4))
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    (root / MANIFEST_NAME).write_text(lines[0] + "\n")
    rc, out, err = run("dataset", "check", root)
    assert rc == 1 and "no_target=1" in out and "targets are unknown" in err
    assert len(list((root / "xy").iterdir())) == 2


def test_import_jetbot_cli(run, tmp_path):
    from dli_perception.core import synthetic, tasks

    src = tmp_path / "dataset_xy"
    written = synthetic.write_jetbot_folder(src, 5, size=(80, 60), seed=3)
    rc, out, err = run("dataset", "import-jetbot", src, tmp_path / "d")
    assert rc == 0, err
    assert "imported 5 of 5 images" in out and "dataset now holds 5 regression images" in out
    with DatasetStore(tmp_path / "d", readonly=True) as store:
        assert store.task == tasks.REGRESSION
        assert sorted(e.xy for e in store.entries) == sorted(
            tasks.pixels_to_xy(px, py, 80, 60) for _, (px, py) in written
        )
    # A bad name: imported what parses, lists the rest, keeps everything.
    (src / "xy_1_2.jpg").write_bytes(written[0][0].read_bytes())
    rc, out, err = run("dataset", "import-jetbot", src, tmp_path / "d2")
    assert rc == 0 and "imported 5 of 6" in out and "xy_1_2.jpg" in out and "1 files were not imported" in err
    assert (src / "xy_1_2.jpg").exists()
    # Only bad names: nothing imported, exit 1.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "frame_1.jpg").write_bytes(written[0][0].read_bytes())
    rc, out, err = run("dataset", "import-jetbot", bad, tmp_path / "d3")
    assert rc == 1 and "frame_1.jpg" in out
    # Into a classification dataset: one clear line, nothing written.
    with DatasetStore(tmp_path / "cls") as store:
        store.add(image(1), "cup")
    rc, _, err = run("dataset", "import-jetbot", src, tmp_path / "cls")
    assert rc == 1 and "classification task" in err and "regression dataset" in err
    assert sorted(p.name for p in (tmp_path / "cls").iterdir() if p.is_dir()) == ["cup"]


def test_a_dataset_mixing_tasks_is_one_clear_line_and_unchanged(run, tmp_path):
    root = tmp_path / "mixed"
    with DatasetStore(root) as store:
        store.add(image(1), "cup")
    other = tmp_path / "xy"
    with DatasetStore(other) as store:
        store.add(image(2), xy=(0.5, -0.5))
    (root / "xy").mkdir()
    for f in (other / "xy").iterdir():
        (root / "xy" / f.name).write_bytes(f.read_bytes())
    with open(root / MANIFEST_NAME, "a") as out:
        out.write((other / MANIFEST_NAME).read_text())
    before = (root / MANIFEST_NAME).read_bytes()
    for action in ("info", "check", "split"):
        rc, _, err = run("dataset", action, root)
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and "mixes task types" in lines[0], err
    assert (root / MANIFEST_NAME).read_bytes() == before
