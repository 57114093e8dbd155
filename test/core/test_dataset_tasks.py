"""DatasetStore with regression (XY) and multi-label targets: counts, vocabulary, repair, undo, JetBot import.

Real files in tmp dirs; JetBot folders are written as the robot's notebook writes them
(``xy_<px>_<py>_<uuid>.jpg``) by core.synthetic_targets.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dli_perception.core import synthetic, tasks
from dli_perception.core.dataset import LABELS_NAME, MANIFEST_NAME, DatasetStore, import_jetbot
from dli_perception.errors import ClassFullError, DatasetError, TargetError


def frame(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def files_under(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


# -------------------------------------------------------------------------- counts and classes


def test_regression_counts_classes_and_limit(tmp_path):
    with DatasetStore(tmp_path / "d", max_per_class=3) as store:
        assert store.task is None and store.counts() == {}
        for i, xy in enumerate([(0.0, 0.0), (-1.0, 1.0), (0.5, -0.25)]):
            store.add(frame(i), xy=xy)
        assert store.task == tasks.REGRESSION
        assert store.counts() == {"xy": 3}
        assert store.classes() == ["x", "y"]
        with pytest.raises(ClassFullError):  # max_per_class limits the whole regression dataset
            store.add(frame(9), xy=(0.1, 0.1))
        assert [e.xy for e in store.entries] == [(0.0, 0.0), (-1.0, 1.0), (0.5, -0.25)]
    lines = [json.loads(line) for line in (tmp_path / "d" / MANIFEST_NAME).read_text().splitlines()]
    assert [line["xy"] for line in lines] == [[0.0, 0.0], [-1.0, 1.0], [0.5, -0.25]]
    assert all(line["file"].startswith("xy/") for line in lines)


def test_multilabel_counts_per_label(tmp_path):
    with DatasetStore(tmp_path / "d") as store:
        store.add(frame(1), labels=["cup", "ball"])
        store.add(frame(2), labels=["cup"])
        store.add(frame(3), labels=[])
        assert store.task == tasks.MULTILABEL
        assert store.counts() == {"ball": 1, "cup": 2}  # the empty set counts in no label
        assert len(store) == 3
        assert store.classes() == ["ball", "cup"]
        assert store.label_vocabulary is None


def test_classification_counts_unchanged(tmp_path):
    with DatasetStore(tmp_path / "d") as store:
        store.add(frame(1), "b")
        store.add(frame(2), "a")
        store.add(frame(3), "a")
        assert store.counts() == {"a": 2, "b": 1}
        assert store.classes() == ["a", "b"]
        assert store.task == tasks.CLASSIFICATION


# -------------------------------------------------------------------------- bad targets


def test_bad_targets_write_nothing(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root) as store:
        store.add(frame(0), xy=(0.2, 0.3))
        before = (root / MANIFEST_NAME).read_bytes(), files_under(root)
        for bad in [(1.01, 0.0), (0.0, -1.5), (float("nan"), 0.0), (0.1,), "0.1,0.2"]:
            with pytest.raises(TargetError):
                store.add(frame(1), xy=bad)
        with pytest.raises(TargetError, match="one task per dataset"):
            store.add(frame(2), "cup")
        with pytest.raises(TargetError, match="one task per dataset"):
            store.add(frame(3), labels=["cup"])
        with pytest.raises(TargetError, match="exactly one target"):
            store.add(frame(4), "cup", xy=(0, 0))
        assert ((root / MANIFEST_NAME).read_bytes(), files_under(root)) == before
        assert len(store) == 1


# -------------------------------------------------------------------------- label vocabulary


def test_declared_vocabulary_refuses_unknown_labels(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root, known_labels=["cup", "ball"]) as store:
        assert (root / LABELS_NAME).read_text() == "ball\ncup\n"
        assert store.task == tasks.MULTILABEL  # declared before the first image
        assert store.classes() == ["ball", "cup"]
        with pytest.raises(TargetError, match="one task per dataset"):
            store.add(frame(0), "cup")
        store.add(frame(1), labels=["cup"])
        with pytest.raises(TargetError, match=r"unknown label\(s\) \['shoe'\]"):
            store.add(frame(2), labels=["cup", "shoe"])
        assert store.counts() == {"cup": 1}
        assert store.classes() == ["ball", "cup"]  # the vocabulary, used or not
    # Reopened without known_labels: labels.txt still rules.
    with DatasetStore(root) as store:
        assert store.label_vocabulary == ("ball", "cup")
        with pytest.raises(TargetError):
            store.add(frame(3), labels=["shoe"])
        # Widening is allowed (atomically rewritten), dropping a declared label is not.
        store.declare_labels(["ball", "cup", "shoe"])
        store.add(frame(4), labels=["shoe"])
    with pytest.raises(TargetError, match="leave out"):
        DatasetStore(root, known_labels=["cup"])
    with pytest.raises(TargetError, match=r"leave out|use label"):
        with DatasetStore(root) as store:
            store.declare_labels(["ball", "cup"])  # an image uses shoe
    assert (root / LABELS_NAME).read_text() == "ball\ncup\nshoe\n"
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_vocabulary_file_that_disagrees_opens_with_clear_error(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root) as store:
        store.add(frame(1), labels=["cup", "ball"])
    manifest = (root / MANIFEST_NAME).read_bytes()
    (root / LABELS_NAME).write_text("cup\n")
    with pytest.raises(TargetError, match=r"\['ball'\].*does not declare"):
        DatasetStore(root)
    (root / LABELS_NAME).write_text("ball\ncup\n../x\n")
    with pytest.raises(TargetError, match=r"labels.txt: .*'\.\./x'.*fix the file"):
        DatasetStore(root, readonly=True)
    assert (root / MANIFEST_NAME).read_bytes() == manifest
    (root / LABELS_NAME).write_text("# the labels\ncup\n\nball\n")
    with DatasetStore(root) as store:
        assert store.label_vocabulary == ("ball", "cup")


def test_vocabulary_in_a_regression_dataset_is_refused(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root) as store:
        store.add(frame(1), xy=(0, 0))
    with pytest.raises(TargetError, match="regression"):
        DatasetStore(root, known_labels=["cup"])
    assert not (root / LABELS_NAME).exists()


# -------------------------------------------------------------------------- repair, mixed tasks, undo


def test_orphans_under_xy_are_never_adopted_as_a_class(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root) as store:
        kept = store.add(frame(1), xy=(0.5, 0.5))
        lost = store.add(frame(2), xy=(-0.5, -0.5))
    # The second image's manifest line is lost (as after a crash mid-batch).
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    (root / MANIFEST_NAME).write_text(lines[0] + "\n")
    with DatasetStore(root) as store:
        report = store.repair_report
        assert report.no_target == [lost.file] and report.adopted == []
        assert not report.clean and "target is unknown" in report.summary()
        assert [e.file for e in store.entries] == [kept.file]
        assert store.task == tasks.REGRESSION and store.counts() == {"xy": 1}
    assert (root / lost.file).is_file()  # left where it was
    # Same for multi-label.
    root = tmp_path / "m"
    with DatasetStore(root) as store:
        store.add(frame(3), labels=["a"])
    (root / MANIFEST_NAME).write_text("")
    with DatasetStore(root) as store:
        assert len(store.repair_report.no_target) == 1 and len(store) == 0
        assert store.task is None


def test_class_named_xy_still_adopts_its_orphans(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root) as store:
        store.add(frame(1), "xy")
        orphan = store.add(frame(2), "xy")
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    (root / MANIFEST_NAME).write_text(lines[0] + "\n")
    with DatasetStore(root) as store:
        assert store.repair_report.adopted == [orphan.file]
        assert store.counts() == {"xy": 2} and store.task == tasks.CLASSIFICATION


def test_mixed_task_manifest_opens_with_clear_error_and_loses_nothing(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root) as store:
        store.add(frame(1), "cup")
    other = tmp_path / "other"
    with DatasetStore(other) as store:
        store.add(frame(2), xy=(0.1, 0.2))
    # Someone copies the regression images and their lines into the classification dataset.
    shutil.copytree(other / "xy", root / "xy")
    with open(root / MANIFEST_NAME, "ab") as f:
        f.write((other / MANIFEST_NAME).read_bytes())
    manifest, files = (root / MANIFEST_NAME).read_bytes(), files_under(root)
    for readonly in (False, True):
        with pytest.raises(TargetError, match=r"mixes task types.*classification.*regression"):
            DatasetStore(root, readonly=readonly)
    assert (root / MANIFEST_NAME).read_bytes() == manifest and files_under(root) == files
    assert issubclass(TargetError, DatasetError)


def test_undo_regression_and_multilabel(tmp_path):
    for kind, target in (("xy", {"xy": (0.25, -0.75)}), ("multilabel", {"labels": ["a", "b"]})):
        root = tmp_path / kind
        with DatasetStore(root) as store:
            first = store.add(frame(1), **target)
            second = store.add(frame(2), **target)
            removed = store.undo(1)
            assert [e.file for e in removed] == [second.file]
            assert not (root / second.file).exists() and (root / first.file).is_file()
            store.undo(1)
            assert len(store) == 0 and not (root / kind).exists()
            assert store.task is None
        with DatasetStore(root) as store:
            assert store.repair_report.clean and len(store) == 0


def test_split_is_reproducible_for_every_task(tmp_path):
    synthetic.make_xy_dataset(tmp_path / "xy", 20, size=32, seed=1)
    synthetic.make_multilabel_dataset(tmp_path / "ml", 20, size=32, seed=1)
    for name in ("xy", "ml"):
        with DatasetStore(tmp_path / name, readonly=True) as store:
            train, val = store.split(0.25, seed=3)
            again = store.split(0.25, seed=3)
            assert len(val) == 5 and len(train) == 15
            assert ([e.file for e in train], [e.file for e in val]) == (
                [e.file for e in again[0]],
                [e.file for e in again[1]],
            )
            assert {e.file for e in train} | {e.file for e in val} == {e.file for e in store.entries}


# -------------------------------------------------------------------------- JetBot import


def test_import_jetbot_folder(tmp_path):
    src = tmp_path / "dataset_xy"
    written = synthetic.write_jetbot_folder(src, 6, size=(64, 48), seed=2)
    calls = []
    with DatasetStore(tmp_path / "d") as store:
        stats = import_jetbot(store, src, progress=lambda done, total: calls.append((done, total)))
        assert stats.saved == 6 and stats.bad_names == [] and stats.images == 6
        assert calls[-1] == (6, 6) and len(calls) == 6
        by_source = {e.source.rsplit("/", 1)[1]: e for e in store.entries}
        for path, (px, py) in written:
            entry = by_source[path.name]
            assert entry.xy == pytest.approx((2 * (px / 64 - 0.5), 2 * (py / 48 - 0.5)))
            assert (store.path_of(entry)).read_bytes() == path.read_bytes()  # stored byte for byte
        again = import_jetbot(store, src)
        assert again.saved == 0 and again.duplicates == 6


def test_import_jetbot_subfolder_and_bad_names(tmp_path):
    src = tmp_path / "road"
    synthetic.write_jetbot_folder(src / "apex", 3, size=224, seed=5)
    good = sorted((src / "apex").iterdir())[0]
    shutil.copy(good, src / "photo_001.jpg")  # no xy_ prefix
    shutil.copy(good, src / "xy_12_abc_1.jpg")  # y does not parse
    shutil.copy(good, src / "xy_500_10_2.jpg")  # pixel outside the 224x224 image
    (src / "xy_10_10_3.jpg").write_bytes(b"\xff\xd8\xffnot a jpeg")
    (src / "notes.txt").write_text("not an image")
    before = files_under(src)
    with DatasetStore(tmp_path / "d") as store:
        stats = import_jetbot(store, src)
        assert stats.saved == 3
        assert sorted(stats.bad_names) == ["photo_001.jpg", "xy_12_abc_1.jpg", "xy_500_10_2.jpg"]
        assert stats.corrupt_files == ["xy_10_10_3.jpg"]
        assert "photo_001.jpg" in stats.summary() and "bad names 3" in stats.summary()
        assert store.counts() == {"xy": 3}
    assert files_under(src) == before  # the source is only read


def test_import_jetbot_into_a_classification_dataset_is_refused(tmp_path):
    src = tmp_path / "road"
    synthetic.write_jetbot_folder(src, 2, size=64, seed=1)
    with DatasetStore(tmp_path / "d") as store:
        store.add(frame(1), "free")
        with pytest.raises(TargetError, match="regression dataset"):
            import_jetbot(store, src)
        assert store.counts() == {"free": 1}
        with pytest.raises(DatasetError, match="not a directory"):
            import_jetbot(store, tmp_path / "missing")


def test_manifest_line_with_an_out_of_range_target_keeps_its_image(tmp_path):
    root = tmp_path / "d"
    with DatasetStore(root) as store:
        store.add(frame(1), xy=(0.1, 0.1))
        bad = store.add(frame(2), xy=(0.2, 0.2))
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    (root / MANIFEST_NAME).write_text(lines[0] + "\n" + lines[1].replace("[0.2,0.2]", "[2.0,0.2]") + "\n")
    with DatasetStore(root) as store:
        report = store.repair_report
        assert report.corrupt_lines == [2] and report.no_target == [bad.file]
        assert len(store) == 1
    assert (root / bad.file).is_file()
