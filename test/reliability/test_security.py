"""Security: names and paths from outside never write outside the dataset root; model files never run code.

* labels from the ``teach_label`` topic (recorder_node), from a bag's label topic and from a bag2dataset
  class map, and hypothesis-generated labels given to the store: whatever the text, every file written
  lies inside the dataset root, under the directory named by the validated label;
* a manifest crafted with traversal entries is not trusted (undo never deletes outside the root);
* ``dataset_dir`` symlink tricks: a symlinked dataset directory, a class directory that is a link to
  elsewhere (planted before start, or swapped in after a capture), a link loop;
* the trainer's ``model_dir`` / ``checkpoint_dir`` parameters never put files into the dataset;
* every torch file the package reads (model dir ``checkpoint.pt``, training checkpoints for resume and
  export, ``weights`` files, the ImageNet file in the torch hub cache) is loaded with
  ``weights_only=True``: a checkpoint whose pickle would run code is refused and the code never runs (its
  marker file is never created). The payload is shown to be live: plain ``torch.load`` runs it.

Already covered elsewhere: "../x" as a teach label and in a --class-map, a pre-planted class symlink in the
core store, and a checkpoint holding a harmless non-tensor object.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from classifier_rig import ClassifierRig, frame_msg
from fixtures_models import build_colour_model_dir, solid
from graphutil import DEADLINE_S, DISCOVERY_S, FrameSource, Spinner, graph_client, unique_ns, wait_for
from harness import (
    assert_manifest_matches_files,
    deliver_frame,
    files_outside,
    recorder_node,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.parameter import Parameter

from dli_perception.core.dataset import MANIFEST_NAME, DatasetStore, validate_label
from dli_perception.errors import DatasetError, InvalidLabelError
from dli_perception.graph_client import Result

NASTY_LABELS = [
    "../../etc/x",
    "..",
    ".",
    "/etc/passwd",
    "a/../../b",
    "..\\..\\x",
    "cup/../../x",
    " ../x ",
    "~/x",
    "$HOME",
    ".hidden",
    ".lock",
    MANIFEST_NAME,
    "x\u202e..",  # right-to-left override
    "\u2024\u2024\u2215x",  # one dot leaders and a division slash: look like ../x, are not
    "\uff0e\uff0e\uff0fx",  # fullwidth ../x
    "a" * 300,
    "line\nbreak",
    "tab\tname",
    "cup",  # a plain one, so something is saved
]
PATHY = st.text(alphabet=st.sampled_from(list("./\\~$ abc\u2215\uff0f\uff0e\u202e\n")), max_size=12)


def _tree(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def _sandbox(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """(top, dataset root, canary): a canary directory beside the root that nothing may touch."""
    top = tmp_path / "top"
    canary = top / "canary"
    canary.mkdir(parents=True)
    (canary / "keep.txt").write_text("nothing may change me")
    return top, top / "data" / "ds", _tree(canary)


def _assert_inside(top: Path, root: Path, canary_before: dict[str, bytes], planted: tuple[Path, ...] = ()) -> None:
    """Nothing under ``top`` but ``root`` (and what the test ``planted`` itself) holds a file or link."""
    assert _tree(top / "canary") == canary_before
    outside = [p for p in files_outside(top, root) if p != top / "canary" / "keep.txt" and p not in planted]
    assert outside == [], outside


def _expected_dir(label: str) -> str | None:
    try:
        return validate_label(label)
    except InvalidLabelError:
        return None


# --------------------------------------------------------------------------- labels


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(label=st.one_of(PATHY, st.sampled_from(NASTY_LABELS), st.text(max_size=70)))
def test_any_label_given_to_the_store_writes_inside_the_root_under_its_own_directory(tmp_path_factory, label):
    tmp = tmp_path_factory.mktemp("labels")
    top, root, canary = _sandbox(tmp)
    rng = np.random.default_rng(len(label))
    with DatasetStore(root, image_format="png") as store:
        try:
            result = store.add(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), label)
        except InvalidLabelError:
            assert _expected_dir(label) is None
        else:
            assert result.path.resolve().parent == root.resolve() / _expected_dir(label)
    _assert_inside(top, root, canary)


@pytest.mark.graph
def test_teach_labels_from_the_topic_never_write_outside_the_dataset(ros_context, tmp_path):
    top, root, canary = _sandbox(tmp_path)
    ns = unique_ns("security")
    recorder = recorder_node(ros_context, root, ns=ns, image_format="png")
    source = FrameSource(ros_context, ns)
    outcomes: Counter[str] = Counter()
    with Spinner(ros_context, recorder, source) as spinner:
        teacher = spinner.own(graph_client(ros_context, ns))
        assert teacher.wait_for_services(DISCOVERY_S, ["capture"]) == []
        for i, label in enumerate(NASTY_LABELS):
            source.say_label(teacher, label)  # raw, as any node on the graph may send it
            deliver_frame(recorder, source, frame_msg(solid((i * 11 % 256, 40, 90)), 1_000_000_000 + i))
            r = teacher.capture()
            expected = _expected_dir(label)
            if expected is None:
                assert r.result is Result.REFUSED and "invalid label" in r.message, (label, r.message)
                outcomes["refused"] += 1
            else:
                assert r.ok, (label, r.message)
                saved = Path(r.path)
                assert saved.parent == root.resolve() / expected, (label, saved)
                outcomes["saved"] += 1
    _assert_inside(top, root, canary)
    counts = assert_manifest_matches_files(root)
    assert sum(counts.values()) == outcomes["saved"] and outcomes["refused"] >= 14, outcomes
    assert recorder.refused["invalid_label"] == outcomes["refused"]


def _bag(path: Path, labels: list[str]) -> Path:
    """A rosbag2 (sqlite3) of image, label, image, label, ... with one image per label and one before any."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from dli_perception.core.imaging import to_rosbags_image

    ts = get_typestore(Stores.ROS2_HUMBLE)
    with Writer(path, version=Writer.VERSION_LATEST) as writer:
        images = writer.add_connection("/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        teach = writer.add_connection("/teach_label", "std_msgs/msg/String", typestore=ts)
        t = 1_700_000_000 * 10**9
        for i, label in enumerate(labels):
            writer.write(teach, t, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data=label), "std_msgs/msg/String"))
            t += 10**7
            image = to_rosbags_image(solid((i * 7 % 256, 100, 200), 8, 8), "rgb8", typestore=ts)
            image.header.stamp.sec, image.header.stamp.nanosec = divmod(t, 10**9)
            writer.write(images, t, ts.serialize_cdr(image, "sensor_msgs/msg/Image"))
            t += 10**7
    return path


def test_labels_and_class_maps_from_bags_never_write_outside_the_dataset(tmp_path):
    from dli_perception.core.bagio import bag_to_dataset

    top, root, canary = _sandbox(tmp_path)
    bag = _bag(tmp_path / "bag", NASTY_LABELS)
    with DatasetStore(root, image_format="png") as store:
        stats = bag_to_dataset(bag, store, "/image_raw", "/teach_label")
        valid = [_expected_dir(x) for x in NASTY_LABELS if _expected_dir(x) is not None]
        assert stats.counts == dict(Counter(valid)), stats.summary()
        assert stats.skipped_invalid_label + stats.skipped_unknown == len(NASTY_LABELS) - len(valid)
        for label in NASTY_LABELS:
            if _expected_dir(label) is None:
                with pytest.raises(InvalidLabelError):
                    bag_to_dataset(bag, store, class_map={"/image_raw": label})
        assert store.counts() == dict(Counter(valid))
    _assert_inside(top, root, canary)
    assert_manifest_matches_files(root)


def test_bag2dataset_cli_refuses_a_class_map_with_traversal(tmp_path):
    top, root, canary = _sandbox(tmp_path)
    bag = _bag(tmp_path / "bag", ["cup"])
    for bad in ("/image_raw:../../canary", "/image_raw:/tmp/x", "/image_raw:..\\x"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "dli_perception.cli",
                "bag2dataset",
                str(bag),
                "--class-map",
                bad,
                "--out",
                str(root),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "class name" in out.stderr, out.stderr
    _assert_inside(top, root, canary)
    assert not root.exists()


def test_a_crafted_manifest_cannot_make_undo_delete_outside_the_root(tmp_path):
    top, root, canary = _sandbox(tmp_path)
    victim = top / "canary" / "keep.txt"
    with DatasetStore(root, image_format="png") as store:
        store.add(solid("red", 8, 8), "cup")
    lines = [
        {"file": "../../canary/keep.txt", "class": "..", "sha256": "0" * 64},
        {"file": "cup/../../../canary/keep.txt", "class": "cup", "sha256": "1" * 64},
        {"file": str(victim), "class": "cup", "sha256": "2" * 64},
        {"file": "cup/..", "class": "cup", "sha256": "3" * 64},
    ]
    with open(root / MANIFEST_NAME, "a") as f:
        for line in lines:
            entry = {
                "stamp_ns": 0,
                "source": "x",
                "width": 1,
                "height": 1,
                "added": "2024-01-01T00:00:00Z",
                **line,
            }
            f.write(json.dumps(entry) + "\n")
    with DatasetStore(root) as store:
        assert len(store.repair_report.corrupt_lines) == len(lines), store.repair_report.summary()
        assert len(store) == 1
        store.undo(5)
        assert len(store) == 0
    _assert_inside(top, root, canary)
    assert victim.read_text() == "nothing may change me"


# --------------------------------------------------------------------------- dataset_dir symlinks


@pytest.mark.graph
def test_dataset_dir_symlink_tricks(ros_context, tmp_path):
    top, _, canary = _sandbox(tmp_path)
    real = top / "data" / "real_ds"
    real.mkdir(parents=True)
    link = top / "data" / "ds_link"
    link.symlink_to(real, target_is_directory=True)
    (real / "planted").symlink_to(top / "canary", target_is_directory=True)  # a class dir leading out
    ns = unique_ns("security")
    recorder = recorder_node(ros_context, link, ns=ns, image_format="png")
    source = FrameSource(ros_context, ns)
    with Spinner(ros_context, recorder, source) as spinner:
        teacher = spinner.own(graph_client(ros_context, ns))
        assert teacher.set_label("cup", DISCOVERY_S).ok, teacher.last_error
        deliver_frame(recorder, source, frame_msg(solid("red"), 1_000_000_001))
        r = teacher.capture(DISCOVERY_S)
        assert r.ok and Path(r.path).parent == real.resolve() / "cup", r.message
        assert teacher.set_label("planted", DISCOVERY_S).ok, teacher.last_error
        deliver_frame(recorder, source, frame_msg(solid("green"), 1_000_000_002))
        r = teacher.capture()
        assert r.result is Result.REFUSED and "symbolic link" in r.message, r.message
        assert recorder.refused["dataset_error"] == 1
    _assert_inside(top, real, canary, planted=(link, real / "planted"))
    assert assert_manifest_matches_files(real) == Counter({"cup": 1})
    loop = top / "data" / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DatasetError):
        recorder_node(ros_context, loop)


def test_a_class_directory_swapped_for_a_symlink_after_a_capture_is_not_followed(tmp_path):
    top, root, canary = _sandbox(tmp_path)
    with DatasetStore(root, image_format="png") as store:
        store.add(solid("red", 8, 8), "cup")
        for p in (root / "cup").iterdir():
            p.unlink()
        (root / "cup").rmdir()
        (root / "cup").symlink_to(top / "canary", target_is_directory=True)
        with pytest.raises(DatasetError, match="symbolic link"):
            store.add(solid("green", 8, 8), "cup")
    _assert_inside(top, root, canary)


@pytest.mark.parametrize("where", ["model_dir_through_a_symlink", "checkpoint_dir_inside"])
def test_trainer_paths_never_point_into_the_dataset(ros_context, tmp_path, where):
    from dli_perception.nodes.trainer_node import TrainerNode

    ds = tmp_path / "ds"
    for name in ("a", "b"):
        (ds / name).mkdir(parents=True)
    (tmp_path / "link").symlink_to(ds, target_is_directory=True)
    params = {"dataset_dir": str(ds), "weights": "none", "model_dir": str(tmp_path / "model")}
    if where == "model_dir_through_a_symlink":
        params["model_dir"] = str(tmp_path / "link" / "model")
    else:
        params["checkpoint_dir"] = str(ds / "checkpoints")
    node = TrainerNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    try:
        ok, message = node.start_training()
        if ok:
            node._job.cancel.set()
            node._worker.join(timeout=30)
        assert not ok and "dataset" in message, message
        assert sorted(p.name for p in ds.iterdir()) == ["a", "b"]
    finally:
        node.destroy_node()


# --------------------------------------------------------------------------- pickled code in model files


PAYLOAD = textwrap.dedent(
    """
    import json, sys, torch

    class Payload:
        def __init__(self, marker):
            self.marker = marker

        def __reduce__(self):  # unpickling calls open(marker, "w"): code chosen by whoever wrote the file
            return (open, (self.marker, "w"))

    jobs = json.loads(sys.argv[1])
    tensors = {"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}
    for kind, path, marker in jobs["write"]:
        if kind == "model":  # a model directory's checkpoint.pt
            obj = {"format": "dli_perception.model_checkpoint", "format_version": 1, "state_dict": tensors,
                   "classes": ["red", "green", "blue"], "backbone": "resnet18", "payload": Payload(marker)}
        elif kind == "training":  # best.pt / last.pt
            obj = {"format": "dli_perception.train_checkpoint", "format_version": 1, "model": tensors,
                   "epoch": 1, "payload": Payload(marker)}
        else:  # a weights file
            obj = {**tensors, "payload": Payload(marker)}
        torch.save(obj, path)
    torch.load(jobs["control"], weights_only=False)  # proves the payload is live: this creates its marker
    """
)


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory) -> dict[str, Path]:
    """A model dir, training checkpoint and weights file whose pickles would create ``marker``."""
    pytest.importorskip("torch")
    from dli_perception.core.modeldir import load_metadata, write_metadata_files

    tmp = tmp_path_factory.mktemp("pickles")
    marker, control_marker = tmp / "PWNED", tmp / "control_ran"
    model_dir = build_colour_model_dir(tmp / "model", ("red", "green", "blue"))
    meta = load_metadata(model_dir)
    meta.backbone = "resnet18"  # so the torch backend goes on to read checkpoint.pt
    write_metadata_files(model_dir, meta)
    (tmp / "ckpt").mkdir()
    files = {
        "marker": marker,
        "model_dir": model_dir,
        "model": model_dir / "checkpoint.pt",
        "training": tmp / "ckpt" / "last.pt",
        "weights": tmp / "weights.pth",
        "control": tmp / "control.pth",
    }
    jobs = {
        "write": [[kind, str(files[kind]), str(marker)] for kind in ("model", "training", "weights")]
        + [["weights", str(files["control"]), str(control_marker)]],
        "control": str(files["control"]),
    }
    out = subprocess.run([sys.executable, "-c", PAYLOAD, json.dumps(jobs)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert control_marker.exists(), "the payload must be live for these tests to mean anything"
    assert not marker.exists()
    return files


def test_pickled_code_in_a_model_dir_checkpoint_never_runs(torch_files):
    from dli_perception.core.backends.select import create_backend
    from dli_perception.errors import BackendUnavailableError, ModelError

    with pytest.raises((ModelError, BackendUnavailableError), match="weights_only"):
        create_backend(torch_files["model_dir"], "torch", device="cpu")
    assert not torch_files["marker"].exists()


def test_pickled_code_in_training_checkpoints_and_weights_never_runs(torch_files, tmp_path, monkeypatch):
    from dli_perception.core import training as T
    from dli_perception.errors import TrainingError

    with pytest.raises(TrainingError):
        T.load_training_checkpoint(torch_files["training"])  # resume and `dli-perception export` read it so
    with pytest.raises(TrainingError):
        T.result_from_checkpoint(torch_files["training"])
    with pytest.raises(TrainingError, match="weights_only"):
        T.build_model("resnet18", num_classes=2, weights=str(torch_files["weights"]))
    # the ImageNet file in the torch hub cache is read the same way
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = T.imagenet_weights_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(torch_files["weights"].read_bytes())
    with pytest.raises(TrainingError, match="weights_only"):
        T.build_model("resnet18", num_classes=2, weights="imagenet")
    assert not torch_files["marker"].exists()


@pytest.mark.graph
def test_classifier_node_refuses_a_model_dir_with_pickled_code_and_keeps_serving(ros_context, torch_files, tmp_path):
    good = build_colour_model_dir(tmp_path / "good", ("red", "green", "blue"))
    with Spinner(ros_context) as spinner:
        rig = ClassifierRig(ros_context, spinner, model_dir=str(good), smoothing="none")
        rig.ready()
        assert rig.node.set_parameters(
            [Parameter("backend", value="torch"), Parameter("model_dir", value=str(torch_files["model_dir"]))]
        )[0].successful
        assert wait_for(lambda: rig.node.load_failures == 1 and not rig.node.loading, DEADLINE_S * 3)
        assert "weights_only" in rig.node.last_load_error
        assert rig.classify_counted(solid("blue"), 1).label == "blue"  # the previous model still serves
    assert not torch_files["marker"].exists()


@pytest.mark.graph
def test_trainer_node_refuses_a_weights_file_with_pickled_code(ros_context, torch_files, tmp_path):
    from dli_perception.nodes.trainer_node import TrainerNode

    ds = tmp_path / "ds"
    for name in ("a", "b"):
        (ds / name).mkdir(parents=True)
        for i in range(2):
            import cv2

            cv2.imwrite(str(ds / name / f"{i}.png"), solid((i * 90, 30, 200 if name == "a" else 20), 16, 16))
    params = {
        "dataset_dir": str(ds),
        "model_dir": str(tmp_path / "model"),
        "weights": str(torch_files["weights"]),
        "image_size": 32,
        "epochs": 1,
        "mode": "head",
    }
    node = TrainerNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    try:
        ok, message = node.start_training()
        assert ok, message
        node._worker.join(timeout=120)
        assert node.last_result.get("status") == "failed", node.last_result
        assert "weights_only" in node.last_result.get("error", ""), node.last_result
    finally:
        node.destroy_node()
    assert not torch_files["marker"].exists() and not (tmp_path / "model").exists()
