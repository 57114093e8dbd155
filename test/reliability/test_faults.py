"""Faults a robot meets in the field, produced for real: a camera source that vanishes and comes back, the
serving model directory corrupted or swapped while the classifier reloads it, the trainer SIGKILLed in the
middle of an epoch, a disk that fills up while recording, and SIGTERM to every node of a running pipeline.

Already covered elsewhere (not repeated here): a corrupt model at a *new* path and a missing directory
(test/nodes/test_classifier_node.py), SIGINT/SIGTERM to each node alone, cancel + resume of a training run
(test/core/test_training.py), the store on a full or read-only tmpfs (test/core/test_dataset.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from classifier_rig import ClassifierRig, frame_msg
from fixtures_models import build_colour_model_dir, solid
from geometry_msgs.msg import Twist
from graphutil import (
    DEADLINE_S,
    DISCOVERY_S,
    Collector,
    FrameSource,
    Spinner,
    graph_client,
    ros_args,
    unique_ns,
    wait_for,
)
from harness import (
    assert_manifest_matches_files,
    manifest,
    recorder_node,
    sigterm_all,
)
from rclpy.parameter import Parameter
from scenarios import trainer_crash_and_resume
from sensor_msgs.msg import Image
from std_msgs.msg import String

from dli_perception.core import fsutil
from dli_perception.core.dataset import DatasetStore
from dli_perception.core.imaging import imgmsg_to_cv2
from dli_perception.core.modeldir import LABELS_FILE, METADATA_FILE, ONNX_FILE
from dli_perception.graph_client import Result
from dli_perception.nodes.camera_node import CameraNode
from dli_perception.nodes.qos import EVENTS, SENSOR_DATA

pytestmark = pytest.mark.graph

CLASSES_A = ["red", "green", "blue"]
CLASSES_B = ["cyan", "magenta", "yellow"]


# --------------------------------------------------------------------------- camera source


def _write_folder(folder: Path, rgb: tuple[int, int, int], n: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        assert cv2.imwrite(str(folder / f"{rgb[0]:03d}_{i}.png"), solid(rgb, 24, 32)[:, :, ::-1])


def _write_video(path: Path, rgb: tuple[int, int, int], frames: int = 4) -> None:
    tmp = path.with_name("writing.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (32, 24))
    assert writer.isOpened()
    for _ in range(frames):
        writer.write(solid(rgb, 24, 32)[:, :, ::-1].copy())
    writer.release()
    os.replace(tmp, path)


def _colour(msg: Image) -> tuple[int, ...]:
    return tuple(int(round(v / 50.0)) * 50 for v in imgmsg_to_cv2(msg, "rgb8").reshape(-1, 3).mean(0))


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_camera_source_vanishing_and_returning_is_reported_and_frames_resume(ros_context, tmp_path, kind):
    red, blue = (200, 0, 0), (0, 0, 200)
    path = tmp_path / ("frames" if kind == "folder" else "clip.avi")
    if kind == "folder":
        _write_folder(path, red)
    else:
        _write_video(path, red)
    params = {
        "source": kind,
        "path": str(path),
        "width": 32,
        "height": 24,
        "fps": 30.0,
        "reconnect.initial_s": 0.05,
        "reconnect.max_s": 0.2,
    }
    camera = CameraNode(context=ros_context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    images = Collector(ros_context, Image, "image_raw", SENSOR_DATA, name="images")
    source = camera._source
    with Spinner(ros_context, camera, images) as spinner:
        client = spinner.own(graph_client(ros_context))
        assert wait_for(lambda: images.count() >= 3, DISCOVERY_S)
        assert all(_colour(m) == red for m in list(images.msgs))  # every frame so far, not only the last

        # The source vanishes: the folder is emptied / the video file is removed.
        if kind == "folder":
            for p in path.iterdir():
                p.unlink()
        else:
            os.replace(path, tmp_path / "moved_away.avi")
        assert wait_for(lambda: not source.connected and source.failures >= 2, DEADLINE_S), source.last_error
        published = camera.published
        failures = source.failures
        assert wait_for(lambda: source.failures >= failures + 2, DEADLINE_S)  # it keeps retrying...
        assert camera.published == published  # ...and publishes nothing meanwhile
        down = client.wait_for_health("camera_node", lambda h: "camera unavailable" in h.message, DEADLINE_S)
        assert down is not None, client.last_error
        assert down.level == "error" and int(down.values["failures"]) >= 2 and down.values["reconnects"] == "0"
        assert ("no images" if kind == "folder" else "does not exist") in down.values["last_error"], down

        # It comes back, with other pictures: frames resume from the new source.
        if kind == "folder":
            _write_folder(path, blue)
        else:
            _write_video(path, blue)
        assert wait_for(lambda: images.count() > 0 and _colour(images.msgs[-1]) == blue, DEADLINE_S)
        assert source.connected and source.reconnects == 1
        up = client.wait_for_health("camera_node", lambda h: h.message == "publishing", DEADLINE_S)
        assert up is not None, client.last_error
        assert up.values["reconnects"] == "1"


# --------------------------------------------------------------------------- model directory


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fault_models")
    return {
        "a": build_colour_model_dir(root / "a", CLASSES_A),
        "b": build_colour_model_dir(root / "b", CLASSES_B),
    }


def _install(src: Path, dest: Path) -> None:
    """Put a copy of model ``src`` at ``dest`` the way the trainer does (built beside it, swapped in)."""
    fsutil.replace_dir(lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True), dest)


def _corrupt(kind: str, serving: Path, models: dict[str, Path]) -> None:
    """Damage the model directory at ``serving`` in place."""
    onnx = serving / ONNX_FILE
    if kind == "garbage_onnx":
        onnx.write_bytes(b"\x08\x07 not a protobuf")
    elif kind == "torn_onnx":  # a copy interrupted half-way
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    elif kind == "other_models_onnx":  # a valid network that metadata.json does not describe
        shutil.copy(models["b"] / ONNX_FILE, onnx)
    elif kind == "metadata_not_json":
        (serving / METADATA_FILE).write_text('{"classes": ["red", ')
    elif kind == "labels_disagree":
        (serving / LABELS_FILE).write_text("red\ngreen\n")
    elif kind == "empty_dir":
        shutil.rmtree(serving)
        serving.mkdir()
    elif kind == "gone":
        shutil.rmtree(serving)
    else:
        raise ValueError(kind)


CORRUPTIONS = [
    "garbage_onnx",
    "torn_onnx",
    "other_models_onnx",
    "metadata_not_json",
    "labels_disagree",
    "empty_dir",
    "gone",
]


def test_serving_model_dir_corrupted_in_place_is_refused_and_the_old_model_keeps_serving(ros_context, tmp_path, models):
    serving = tmp_path / "serving"
    _install(models["a"], serving)
    with Spinner(ros_context) as spinner:
        rig = ClassifierRig(ros_context, spinner, model_dir=str(serving), smoothing="none")
        rig.ready()
        node = rig.node
        stamp = iter(range(1, 10_000))
        assert rig.classify_counted(solid("red"), next(stamp)).label == "red"
        serving_classes = CLASSES_A
        for n, kind in enumerate(CORRUPTIONS, start=1):
            _corrupt(kind, serving, models)
            rig.model_pub.publish(String(data=""))  # "reload the model you serve"
            assert wait_for(lambda n=n: node.load_failures == n and not node.loading, DEADLINE_S), (
                kind,
                node.status(),
            )
            assert node.status() == "load failed; previous model serving", kind
            colour = serving_classes[n % 3]
            result = rig.classify_counted(solid(colour), next(stamp))
            assert result.label == colour and set(result.scores) == set(serving_classes), (kind, result)
            if n == 1:  # reported: WARN, the error, the model still serving
                assert wait_for(lambda: rig.diag("model_load_failures") == "1", DEADLINE_S)
                diag = rig.health()
                assert diag.level == "warn" and str(serving) in diag.values["last_error"], (kind, diag)
                assert diag.values["classes"] == ",".join(serving_classes)
            # A good model arrives at the same path (the other one, so the swap is visible) and is served.
            good = models["b"] if serving_classes == CLASSES_A else models["a"]
            serving_classes = CLASSES_B if serving_classes == CLASSES_A else CLASSES_A
            if serving.exists():
                _install(good, serving)
            else:
                shutil.copytree(good, serving)
            rig.model_pub.publish(String(data=""))
            assert wait_for(lambda c=serving_classes: rig.current_classes() == c, DEADLINE_S), (
                kind,
                node.last_error,
            )
            assert rig.classify_counted(solid(serving_classes[0]), next(stamp)).label == serving_classes[0]
            assert node.status() == "serving"
        assert node.errors == 0 and node.bad == 0
        assert node.loads == 1 + len(CORRUPTIONS) and node.load_failures == len(CORRUPTIONS)
        # /diagnostics (1 Hz) reports the failures and, once the last good model loaded, serving again
        assert rig.client.wait_for_health(
            "classifier_node",
            lambda h: (
                h.values.get("model_load_failures") == str(len(CORRUPTIONS)) and h.values.get("status") == "serving"
            ),
            DEADLINE_S,
        ), rig.health()


def test_model_dir_swapped_and_corrupted_while_reloads_run_never_stops_serving(ros_context, tmp_path, models):
    """A trainer exporting over the serving directory again and again while the classifier reloads it."""
    serving = tmp_path / "serving"
    _install(models["a"], serving)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(models["a"], corrupt)
    _corrupt("torn_onnx", corrupt, models)
    flips = 40
    with Spinner(ros_context) as spinner:
        rig = ClassifierRig(ros_context, spinner, model_dir=str(serving), smoothing="none")
        rig.ready()
        node = rig.node
        done = threading.Event()

        def trainer() -> None:
            for i in range(flips):
                _install((models["a"], corrupt, models["b"])[i % 3], serving)
                rig.model_pub.publish(String(data=""))
                wait_for(lambda: not node.core.load_pending, DEADLINE_S, interval=0.005)
            _install(models["b"], serving)
            done.set()

        flipper = threading.Thread(target=trainer, daemon=True)
        flipper.start()
        stamp = 0
        while not done.is_set():  # frames keep coming and each one is answered by a complete model
            stamp += 1
            result = rig.classify_counted(solid("red"), stamp)
            classes = set(result.scores)
            assert classes in (set(CLASSES_A), set(CLASSES_B)), result
            if classes == set(CLASSES_A):
                assert result.label == "red", result
        flipper.join(timeout=DEADLINE_S)
        rig.model_pub.publish(String(data=""))
        assert wait_for(lambda: rig.current_classes() == CLASSES_B and not node.loading, DEADLINE_S)
        assert rig.classify_counted(solid("yellow"), stamp + 1).label == "yellow"
        assert node.errors == 0 and node.bad == 0 and node.loads >= 2
        assert node.load_failures >= 1  # the corrupt copies (and swaps caught half-way) were refused


# --------------------------------------------------------------------------- trainer


TRAIN_PARAMS = {
    "image_size": 32,
    "weights": "none",
    "mode": "finetune",
    "epochs": 3,
    "batch_size": 4,
    "val_fraction": 0.25,
    "early_stop_patience": 0,
    "torch_threads": 1,
    "progress_rate_hz": 100.0,
    "seed": 3,
}


@pytest.fixture(scope="module")
def train_dataset(tmp_path_factory) -> Path:
    from dli_perception.core.synthetic import SyntheticScenes

    root = tmp_path_factory.mktemp("fault_train") / "ds"
    classes = ("free", "blocked")
    scenes = SyntheticScenes(classes, 64, 64, seed=5)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(8):
            assert cv2.imwrite(
                str(root / name / f"{i:03d}.png"), cv2.cvtColor(scenes.render(name, i), cv2.COLOR_RGB2BGR)
            )
    return root


def test_trainer_sigkilled_mid_epoch_resumes_from_its_checkpoint(ros_context, train_dataset, tmp_path):
    pytest.importorskip("torch")
    figures = trainer_crash_and_resume(
        ros_context, tmp_path, train_dataset, TRAIN_PARAMS, kill_epoch=2, ns=unique_ns("faults")
    )
    assert figures["completed_before_kill"] >= 1, figures
    # benchmarks/reliability.py also trains the uninterrupted twin: the resumed weights are bit-identical.


# --------------------------------------------------------------------------- disk full


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_disk_full_while_recording_refuses_reports_stays_up_and_recovers(ros_context, tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "256k"):
        pytest.skip("needs root and permission to mount a 256 kB tmpfs")
    try:
        root = mnt / "ds"
        recorder = recorder_node(ros_context, root, image_format="png", capture_rate_hz=30.0, queue_size=2)
        frames = FrameSource(ros_context)
        rng = np.random.default_rng(0)
        stamp = iter(range(1_000_000_000, 2_000_000_000))

        def noise_frame() -> None:  # incompressible 48x64 frames: ~9 kB each as PNG
            frames.image_pub.publish(frame_msg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), next(stamp)))

        with Spinner(ros_context, recorder, frames) as spinner:
            teacher = spinner.own(graph_client(ros_context))
            assert teacher.set_label("road", DISCOVERY_S).ok, teacher.last_error
            assert teacher.set_recording(True, DISCOVERY_S).ok, teacher.last_error
            assert wait_for(lambda: (noise_frame(), recorder.refused["dataset_error"] >= 3)[1], 60.0, interval=0.02), (
                recorder.saved,
                recorder.refused,
                recorder.last_error,
            )
            saved_when_full = recorder.saved
            assert saved_when_full >= 3 and "disk is full" in recorder.last_error
            # Still up: frames are received, a manual capture is answered with the reason.
            received = recorder._frames_received
            assert wait_for(lambda: (noise_frame(), recorder._frames_received > received + 3)[1], DEADLINE_S)
            r = teacher.capture()
            assert r.result is Result.REFUSED and "disk is full" in r.message, r.message
            assert teacher.wait_for_health("recorder_node", lambda h: "disk is full" in h.message, DEADLINE_S), (
                teacher.last_error
            )
            full = [h for h in teacher.health_history("recorder_node") if "disk is full" in h.message]
            assert all(h.level == "warn" for h in full), full[-3:]  # every report of it is a warning
            assert teacher.wait_for_health(
                "recorder_node", lambda h: int(h.values.get("refused_dataset_error", "0")) >= 3, DEADLINE_S
            ), teacher.last_error
            assert teacher.set_recording(False).ok, teacher.last_error
            assert wait_for(lambda: recorder._queue.qsize() == 0, DEADLINE_S)
            assert assert_manifest_matches_files(root) == Counter({"road": recorder.saved})
            # Space comes back: recording works again without a restart.
            subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True, capture_output=True)
            before = recorder.saved
            noise_frame()
            assert wait_for(lambda: (noise_frame(), teacher.capture().ok)[1], DEADLINE_S)
            assert recorder.saved == before + 1
        counts = assert_manifest_matches_files(root)
        assert counts == Counter({"road": recorder.saved}) and len(manifest(root)) == recorder.saved
        with DatasetStore(root) as store:
            assert store.repair_report.clean, store.repair_report.summary()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# --------------------------------------------------------------------------- SIGTERM to everything


def test_sigterm_to_every_node_of_a_running_pipeline_exits_cleanly_with_a_final_zero_twist(
    node_process, ros_context, tmp_path, models, train_dataset
):
    ns = unique_ns("faults")
    model = build_colour_model_dir(
        tmp_path / "model", ("free", "blocked"), {"free": (90, 160, 90), "blocked": (140, 90, 70)}
    )
    remap = ["-r", f"__ns:={ns}"]
    procs = {
        "camera_node": node_process("camera_node", *remap, *ros_args(width=64, height=48, fps=15.0)),
        "classifier_node": node_process(
            "classifier_node",
            *remap,
            *ros_args(model_dir=model, backend="onnxruntime", smoothing="none", threads=1),
        ),
        "reaction_node": node_process("reaction_node", *remap, *ros_args(start_enabled=True)),
        "recorder_node": node_process(
            "recorder_node", *remap, *ros_args(dataset_dir=tmp_path / "ds", capture_rate_hz=5.0)
        ),
        "trainer_node": node_process(
            "trainer_node",
            *remap,
            *ros_args(
                **{
                    **TRAIN_PARAMS,
                    "epochs": 1000,
                    "dataset_dir": train_dataset,
                    "model_dir": tmp_path / "trained",
                }
            ),
        ),
    }
    cmds = Collector(ros_context, Twist, f"{ns}/cmd_vel", EVENTS, name="cmds")

    def moving() -> bool:
        return any(m.linear.x != 0.0 or m.angular.z != 0.0 for m in list(cmds.msgs))

    with Spinner(ros_context, cmds) as spinner:
        teacher = spinner.own(graph_client(ros_context, ns))
        missing = teacher.wait_for_services(DISCOVERY_S, ["set_recording", "train"])
        assert not missing, (missing, {k: p.output()[-2000:] for k, p in procs.items()})
        assert teacher.set_recording(True).ok, teacher.last_error
        assert teacher.start_training().ok, teacher.last_error
        # Everything is busy: the robot drives on the labels, frames are recorded, a model trains.
        assert wait_for(moving, DISCOVERY_S * 2), procs["reaction_node"].output()[-2000:]

        def recorded() -> bool:
            teacher.set_label("free", timeout_s=0.1)  # what is being shown; repeated until frames are saved
            counts = teacher.counts()
            return counts is not None and counts.total >= 2

        assert wait_for(recorded, DISCOVERY_S, interval=0.1), procs["recorder_node"].output()[-2000:]
        assert wait_for(lambda: any(p.phase == "train" for p in teacher.history("progress")), 120.0), procs[
            "trainer_node"
        ].output()[-2000:]
        codes = sigterm_all(procs.values())
        assert wait_for(
            lambda: cmds.count() > 0 and (cmds.msgs[-1].linear.x, cmds.msgs[-1].angular.z) == (0.0, 0.0),
            DEADLINE_S,
        )
    for (name, proc), code in zip(procs.items(), codes, strict=True):
        assert code == 0, (name, proc.output()[-3000:])
        assert "Traceback" not in proc.stderr(), (name, proc.stderr()[-3000:])
    assert "camera released" in procs["camera_node"].output()
    assert "worker joined" in procs["classifier_node"].output()
    assert "closed:" in procs["recorder_node"].output()
    assert "cancelling run 1" in procs["trainer_node"].output()
    assert not (tmp_path / "trained").exists()
    with DatasetStore(tmp_path / "ds") as store:
        assert store.repair_report.clean and len(store) >= 2
    assert_manifest_matches_files(tmp_path / "ds")
