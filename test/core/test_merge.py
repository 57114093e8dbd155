"""``dataset merge``: real stores on disk, merged by the core and by the CLI; dedupe, provenance,
label and class-name conflicts, and atomicity (the output appears whole or not at all)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from dli_perception import cli
from dli_perception.core.dataset import MANIFEST_NAME, DatasetStore, ManifestEntry
from dli_perception.core.merge import merge_datasets, parse_renames
from dli_perception.errors import ConfigError, MergeError


def image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)


def make_store(root: Path, items: list[tuple[int, str]], **provenance: str) -> Path:
    """A dataset holding ``image(i)`` under each ``label``; stamps are 1000 + i."""
    with DatasetStore(root, image_format="png") as store:
        for i, label in items:
            store.add_encoded(
                store.encode(image(i)), label, 1000 + i, f"{provenance.get('bag', 'x')}:/cam", **provenance
            )
    return root


def lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / MANIFEST_NAME).read_text().splitlines()]


def no_temp_dirs(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_old_manifest_lines_load_and_provenance_round_trips(tmp_path):
    old = {"file": "cup/000001_abc.png", "class": "cup", "stamp_ns": 5, "source": "capture", "width": 1,
           "height": 1, "sha256": "ab", "added": "2024-01-01T00:00:00.000+00:00"}  # fmt: skip
    entry = ManifestEntry.from_json(old)
    assert (entry.robot, entry.bag, entry.topic) == ("", "", "")
    assert json.loads(entry.to_line()) == old  # an old line is rewritten byte for byte the same
    new = ManifestEntry.from_json({**old, "robot": "r1", "bag": "b1", "topic": "/cam"})
    assert new.provenance() == {"robot": "r1", "bag": "b1", "topic": "/cam", "stamp_ns": 5}
    assert json.loads(new.to_line())["robot"] == "r1"
    with pytest.raises(ValueError):
        ManifestEntry.from_json({**old, "robot": 3})


def test_merge_dedupes_by_content_and_records_provenance(tmp_path):
    a = make_store(
        tmp_path / "robot_a", [(0, "cup"), (1, "cup"), (2, "ball")], robot="jetbot1", bag="bag_a", topic="/cam"
    )
    b = tmp_path / "robot_b"
    with DatasetStore(b, image_format="png") as store:  # an older store: provenance only in ``source``
        for i, label in [(1, "cup"), (2, "ball"), (3, "ball")]:
            store.add_encoded(store.encode(image(i)), label, 2000 + i, "bag_b:/front/image_raw")
    out = tmp_path / "merged"
    before = (a / MANIFEST_NAME).read_bytes(), (b / MANIFEST_NAME).read_bytes()
    report = merge_datasets([a, b], out)
    assert (report.images_in, report.written, report.duplicates) == (6, 4, 2)
    assert report.counts == {"ball": 2, "cup": 2}
    assert report.robots == {"jetbot1": 3, "robot_b": 1}
    got = {(e["class"], e["stamp_ns"]): e for e in lines(out)}
    assert set(got) == {("cup", 1000), ("cup", 1001), ("ball", 1002), ("ball", 2003)}
    first = got[("cup", 1001)]  # the duplicate keeps the first input's provenance
    assert (first["robot"], first["bag"], first["topic"]) == ("jetbot1", "bag_a", "/cam")
    older = got[("ball", 2003)]
    assert (older["robot"], older["bag"], older["topic"]) == ("robot_b", "bag_b", "/front/image_raw")
    with DatasetStore(out, readonly=True) as merged:  # a consistent store, files byte-equal to the inputs
        assert merged.repair_report.clean and len(merged) == 4
        for e in merged.entries:
            assert merged.path_of(e).is_file()
    assert ((a / MANIFEST_NAME).read_bytes(), (b / MANIFEST_NAME).read_bytes()) == before  # inputs untouched
    assert no_temp_dirs(tmp_path)


def test_an_image_under_two_classes_is_left_out_listed_or_refused(tmp_path):
    a = make_store(tmp_path / "a", [(0, "free"), (1, "free")], robot="r1")
    b = make_store(tmp_path / "b", [(1, "blocked"), (2, "blocked")], robot="r2")
    report = merge_datasets([a, b], tmp_path / "drop")
    assert report.written == 2 and report.dropped_conflicting == 2
    assert report.counts == {"blocked": 1, "free": 1}
    [(places)] = report.label_conflicts.values()
    assert sorted(label for _, _, label in places) == ["blocked", "free"]
    assert "label conflicts: 1 images" in report.summary()

    first = merge_datasets([a, b], tmp_path / "first", label_conflicts="first")
    assert first.counts == {"blocked": 1, "free": 2}

    with pytest.raises(MergeError, match="different classes"):
        merge_datasets([a, b], tmp_path / "fail", label_conflicts="fail")
    assert not (tmp_path / "fail").exists() and no_temp_dirs(tmp_path)


def test_class_names_equal_but_for_case_are_refused_until_renamed(tmp_path):
    a = make_store(tmp_path / "a", [(0, "cup")])
    b = make_store(tmp_path / "b", [(1, "Cup"), (2, "ball")])
    with pytest.raises(MergeError, match=r"differ only by case: Cup / cup.*--rename Cup=cup"):
        merge_datasets([a, b], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    report = merge_datasets([a, b], tmp_path / "m", rename=parse_renames(["Cup=cup"]))
    assert report.counts == {"ball": 1, "cup": 2}
    with pytest.raises(ConfigError):
        parse_renames(["Cup"])


def test_output_is_atomic_and_never_overwritten_by_accident(tmp_path):
    a = make_store(tmp_path / "a", [(i, "cup") for i in range(6)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MergeError, match="not empty"):
        merge_datasets([a], out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    def fail_midway(done: int, total: int) -> None:
        if done == 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(Exception, match="No space left"):
        merge_datasets([a], out, overwrite=True, progress=fail_midway)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and no_temp_dirs(tmp_path)

    stop = threading.Event()
    report = merge_datasets([a], tmp_path / "cancelled", progress=lambda d, t: stop.set(), stop_event=stop)
    assert report.cancelled and not (tmp_path / "cancelled").exists() and no_temp_dirs(tmp_path)

    report = merge_datasets([a], out, overwrite=True)
    assert report.written == 6 and not (out / "keep.txt").exists()
    with pytest.raises(MergeError, match="both an input and --out"):
        merge_datasets([out], out, overwrite=True)


def test_cli_merge_prints_the_report(tmp_path, capsys):
    a = make_store(tmp_path / "a", [(0, "cup"), (1, "ball")], robot="r1")
    b = make_store(tmp_path / "b", [(1, "ball"), (2, "Ball")], robot="r2")
    out = tmp_path / "m"
    rc = cli.main(["dataset", "merge", str(a), str(b), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "differ only by case" in err and not out.exists()
    rc = cli.main(["dataset", "merge", str(a), str(b), "--out", str(out), "--rename", "Ball=ball", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["written"] == 3 and report["duplicates"] == 1
    assert report["robots"] == {"r1": 2, "r2": 1}
    rc = cli.main(["dataset", "merge", str(a), "--out", str(out)])
    assert rc == 1 and "--force" in capsys.readouterr().err


# -------------------------------------------------------------------------- regression and multi-label


def test_merge_refuses_datasets_of_different_tasks(tmp_path):
    cls = make_store(tmp_path / "cls", [(0, "cup")])
    xy = tmp_path / "xy"
    with DatasetStore(xy) as store:
        store.add(image(1), xy=(0.5, 0.5))
    ml = tmp_path / "ml"
    with DatasetStore(ml) as store:
        store.add(image(2), labels=["cup"])
    empty = tmp_path / "empty"
    DatasetStore(empty).close()
    for pair in ((cls, xy), (xy, ml), (ml, empty, cls)):
        with pytest.raises(MergeError, match=r"different tasks: .*\((classification|regression|multilabel)\)"):
            merge_datasets(pair, tmp_path / "out")
        assert not (tmp_path / "out").exists() and no_temp_dirs(tmp_path)


def test_merge_regression_datasets_dedupes_and_keeps_targets(tmp_path):
    a, b = tmp_path / "robot_a", tmp_path / "robot_b"
    with DatasetStore(a, image_format="png") as store:
        store.add(image(0), xy=(0.1, -0.2))
        store.add(image(1), xy=(0.3, 0.4))
        store.add(image(5), xy=(0.0, 0.0))
    with DatasetStore(b, image_format="png") as store:
        store.add(image(0), xy=(0.1, -0.2))  # same image, same target: stored once
        store.add(image(2), xy=(-1.0, 1.0))
        store.add(image(5), xy=(0.9, 0.9))  # same image, another target: a conflict
    report = merge_datasets([a, b], tmp_path / "out")
    assert report.task == "regression" and report.written == 3 and report.duplicates == 1
    assert report.dropped_conflicting == 2 and len(report.label_conflicts) == 1
    (places,) = report.label_conflicts.values()
    assert [p[2] for p in places] == ["xy=0,0", "xy=0.9,0.9"]
    assert "(task regression)" in report.summary() and "targets: xy 3" in report.summary()
    with DatasetStore(tmp_path / "out", readonly=True) as out:
        assert out.task == "regression"
        assert sorted(e.xy for e in out.entries) == [(-1.0, 1.0), (0.1, -0.2), (0.3, 0.4)]
        assert {e.robot for e in out.entries} == {"robot_a", "robot_b"}


def test_merge_multilabel_datasets_with_renames_and_vocabularies(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with DatasetStore(a, known_labels=["cup", "ball"]) as store:
        store.add(image(0), labels=["cup", "ball"])
        store.add(image(1), labels=[])
    with DatasetStore(b, known_labels=["Cup", "shoe"]) as store:
        store.add(image(2), labels=["Cup"])
        store.add(image(3), labels=["shoe", "Cup"])
    with pytest.raises(MergeError, match="differ only by case: Cup / cup"):
        merge_datasets([a, b], tmp_path / "out")
    report = merge_datasets([a, b], tmp_path / "out", rename={"Cup": "cup"})
    assert report.task == "multilabel" and report.written == 4
    assert report.counts == {"ball": 1, "cup": 3, "shoe": 1}
    with DatasetStore(tmp_path / "out", readonly=True) as out:
        assert out.label_vocabulary == ("ball", "cup", "shoe")
        assert [e.labels for e in out.entries] == [("ball", "cup"), (), ("cup",), ("cup", "shoe")]
