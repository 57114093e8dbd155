"""recorder_node over real topics and services: in one process (frames published by the test), and
across processes with camera_node (synthetic source); the dataset on disk must match what was asked.

The test talks to the recorder through the package's graph client (capture, undo, recording, labels,
counts, diagnostics); only frames, and labels the client refuses to send (``../x``, ``none``), go
out raw, as a camera or any other node would publish them.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from graphutil import (
    DEADLINE_S,
    DISCOVERY_S,
    FrameSource,
    NodeProcess,
    Spinner,
    graph_client,
    overrides,
    refused,
    stop_and_check,
    unique_ns,
    wait_for,
)
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from storeutil import slow_store

from dli_perception.core.contracts import Counts
from dli_perception.core.dataset import MANIFEST_NAME, DatasetStore
from dli_perception.graph_client import Reply, Result, Teacher
from dli_perception.nodes.camera_node import CameraNode
from dli_perception.nodes.recorder_node import RecorderNode

pytestmark = pytest.mark.graph


def _pixels(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    """A distinct, smooth RGB test image per index (so dedupe never merges two of them)."""
    rng = np.random.default_rng(i)
    small = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _image_msg(pixels: np.ndarray, stamp_ns: int = 0) -> Image:
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding="rgb8", step=pixels.shape[1] * 3)
    msg.data = pixels.tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = "cam"
    return msg


CAMERA_64x48_30HZ = {"width": 64, "height": 48, "fps": 30.0}


def _recorder(context, ns: str, root: Path, **params) -> RecorderNode:
    return RecorderNode(
        context=context, namespace=ns, parameter_overrides=overrides({"dataset_dir": str(root), **params})
    )


def _disk(root: Path) -> Counter:
    """Image files per class directory, as ImageFolder would see them."""
    return Counter(p.parent.name for p in root.glob("*/*") if p.suffix in (".jpg", ".png"))


def _manifest(root: Path) -> list[dict]:
    path = root / MANIFEST_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_consistent(root: Path, expected: dict[str, int], counts: Counts | None = None) -> None:
    """Files per class == manifest per class == expected (== the last counts message when given)."""
    lines = _manifest(root)
    assert _disk(root) == Counter(expected), (_disk(root), expected)
    assert Counter(e["class"] for e in lines) == Counter(expected)
    assert all((root / e["file"]).is_file() for e in lines)
    if counts is not None:
        assert counts == Counts(dict(expected)), counts


def _label(teacher: Teacher, label: str) -> None:
    """Set the teach label through the client and wait until the recorder confirms it."""
    reply = teacher.set_label(label, timeout_s=DISCOVERY_S)
    assert reply.ok, reply.message


def _last_counts(teacher: Teacher, predicate) -> Counts:
    counts = teacher.wait_for_counts(predicate, timeout_s=DEADLINE_S)
    assert counts is not None, teacher.last_error
    return counts


def _frame_delivered(recorder: RecorderNode, source: FrameSource, pixels: np.ndarray) -> None:
    """Publish ``pixels`` until the recorder holds it as its newest frame."""
    msg = _image_msg(pixels, stamp_ns=1_700_000_000_123_456_789)

    def step() -> bool:
        source.image_pub.publish(msg)
        frame = recorder._frame
        return frame is not None and bytes(frame.msg.data) == bytes(msg.data)

    assert wait_for(step, timeout=DISCOVERY_S, interval=0.05)


def test_capture_refusals_undo_and_counts_in_one_process(ros_context, tmp_path):
    ns, root = unique_ns("recorder_test"), tmp_path / "ds"
    recorder = _recorder(ros_context, ns, root, image_format="png", max_frame_age_s=30.0)
    source = FrameSource(ros_context, ns)
    with Spinner(ros_context, recorder, source), graph_client(ros_context, ns) as teacher:
        assert wait_for(lambda: teacher.history("counts") == [Counts({})], DISCOVERY_S), teacher.history("counts")
        assert teacher.wait_for_services(DISCOVERY_S, ["capture", "undo"]) == []
        # no label, then a label but no frame yet
        r = teacher.capture()
        assert refused(r, "no teach label"), r
        _label(teacher, "cup")
        r = teacher.capture()
        assert refused(r, "no frame received yet"), r
        # an invalid label (sent raw: the client refuses it) is refused with the validator's reason, nothing written
        source.say_label(teacher, "../x")
        _frame_delivered(recorder, source, _pixels(0))
        r = teacher.capture()
        assert refused(r, "invalid label", "path separator"), r
        assert _disk(root) == Counter()
        # three cups, two balls (each a new frame), then undo the last ball
        saved: list[tuple[str, np.ndarray]] = []
        for label, indices in (("cup", (1, 2, 3)), ("ball", (4, 5))):
            _label(teacher, label)
            for i in indices:
                _frame_delivered(recorder, source, _pixels(i))
                r = teacher.capture()
                assert r.ok, r.message
                path = Path(r.path)
                assert path.is_file() and path.parent == (root / label).resolve(), r.message
                saved.append((label, path))
        # the same frame again is a duplicate: refused, nothing written
        r = teacher.capture()
        assert refused(r) and r.message.startswith("duplicate"), r.message
        r = teacher.undo()
        assert r.ok and "removed ball/" in r.message and r.path.startswith("ball/"), r.message
        assert not saved[-1][1].exists() and saved[-2][1].exists()
        expected = {"ball": 1, "cup": 3}
        _assert_consistent(root, expected, _last_counts(teacher, lambda c: c.total == 4))
        # label cleared with "none" (sent raw, as the recorder reads it): refused again
        source.say_label(teacher, "none")
        r = teacher.capture()
        assert refused(r, "no teach label"), r
        # a stale frame is refused: the newest frame is older than max_frame_age_s
        assert recorder.set_parameters([Parameter("max_frame_age_s", value=0.05)])[0].successful
        _label(teacher, "cup")
        assert wait_for(lambda: time.monotonic() - recorder._frame.received > 0.05, timeout=DEADLINE_S)
        r = teacher.capture()
        assert refused(r, "stale frame"), r.message
        assert recorder.refused["stale_frame"] == 1 and recorder.refused["no_label"] == 2
        assert recorder.refused["invalid_label"] == 1 and recorder.refused["duplicate"] == 1
        diag = teacher.wait_for_health("recorder_node", lambda h: "refused_stale_frame" in h.values, DEADLINE_S)
        assert diag is not None, teacher.last_error
        assert diag.values["saved"] == "5" and diag.values["undone"] == "1"
        assert diag.values["dataset"] == str(root.resolve())
        assert teacher.bad_messages == 0, teacher.last_error
    _assert_consistent(root, expected)
    # the images hold exactly the pixels that were published (PNG: lossless), in RGB order
    entries = {e["file"]: e for e in _manifest(root)}
    for (label, path), i in zip(saved[:4], (1, 2, 3, 4), strict=True):
        stored = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(stored, _pixels(i))
        entry = entries[f"{label}/{path.name}"]
        assert entry["stamp_ns"] == 1_700_000_000_123_456_789 and entry["source"] == f"{ns}/image_raw"
    # the store was closed by destroy_node: the lock is free and the dataset reopens clean
    with DatasetStore(root) as store:
        assert store.repair_report.clean and store.counts() == expected


def test_class_limit_and_dataset_errors_are_refusals(ros_context, tmp_path):
    ns, root = unique_ns("recorder_test"), tmp_path / "ds"
    recorder = _recorder(ros_context, ns, root, max_per_class=2, max_frame_age_s=30.0)
    source = FrameSource(ros_context, ns)
    with Spinner(ros_context, recorder, source), graph_client(ros_context, ns) as teacher:
        assert teacher.wait_for_services(DISCOVERY_S, ["capture"]) == []
        _label(teacher, "cup")
        for i in range(2):
            _frame_delivered(recorder, source, _pixels(10 + i))
            assert teacher.capture().ok, teacher.last_error
        _frame_delivered(recorder, source, _pixels(12))
        r = teacher.capture()
        assert refused(r, "is full", "max_per_class"), r.message
        # a class directory that cannot be created (a file is in the way): the store's error comes back
        (root / "mug").write_text("not a directory")
        _label(teacher, "mug")
        r = teacher.capture()
        assert refused(r, "mug", "nothing was written"), r.message
        assert recorder.last_error == r.message
        assert recorder.refused == Counter({"class_full": 1, "dataset_error": 1})
    _assert_consistent(root, {"cup": 2})


def test_continuous_capture_never_blocks_frames_and_drops_when_the_writer_lags(ros_context, tmp_path):
    ns, root = unique_ns("recorder_test"), tmp_path / "ds"
    recorder = _recorder(ros_context, ns, root, capture_rate_hz=50.0, queue_size=2, write_timeout_s=0.3)
    source = FrameSource(ros_context, ns)
    index = iter(range(100, 100_000))

    def publish_frame() -> None:
        source.image_pub.publish(_image_msg(_pixels(next(index))))

    with Spinner(ros_context, recorder, source), graph_client(ros_context, ns) as teacher:
        assert teacher.wait_for_services(DISCOVERY_S, ["capture", "set_recording"]) == []
        # recording without a label: accepted, frames are skipped (counted) until a label arrives
        r = teacher.set_recording(True)
        assert r.ok and "no teach label yet" in r.message, r
        assert wait_for(lambda: (publish_frame(), recorder.refused["no_label"] >= 3)[1], DEADLINE_S, 0.02)
        assert recorder.saved == 0 and _disk(root) == Counter()
        _label(teacher, "road")
        r = teacher.set_recording(True)
        assert r.ok and "recording at 50 Hz under 'road'" in r.message, r
        assert wait_for(lambda: (publish_frame(), recorder.saved >= 5)[1], timeout=DEADLINE_S, interval=0.02)
        # a new rate applies at once
        assert recorder.set_parameters([Parameter("capture_rate_hz", value=25.0)])[0].successful
        assert recorder._record_timer.timer_period_ns == 40_000_000
        # Hold the store's lock: the writer stalls on its next image. Frames keep arriving, the queue
        # stays bounded, and further frames are dropped and counted.
        with recorder._store._lock:
            received = recorder._frames_received
            assert wait_for(lambda: (publish_frame(), recorder.dropped >= 3)[1], timeout=DEADLINE_S, interval=0.02)
            assert recorder._frames_received > received
            assert recorder._queue.qsize() <= 2
            r = teacher.capture()
            assert refused(r, "write_timeout_s"), r.message
        assert teacher.set_recording(False).ok, teacher.last_error
        assert wait_for(lambda: recorder.pending_jobs == 0, timeout=DEADLINE_S)
        saved = recorder.saved
        assert recorder.refused["busy"] == 1 and recorder.dropped >= 3
        _assert_consistent(root, {"road": saved}, _last_counts(teacher, lambda c: c.total == saved))
        # stopped: new frames arrive (spread over several timer periods) and are not saved any more
        received = recorder._frames_received
        assert wait_for(
            lambda: (publish_frame(), recorder._frames_received >= received + 5)[1],
            timeout=DEADLINE_S,
            interval=0.02,
        )
        assert recorder.saved == saved and recorder._record_timer is None
    _assert_consistent(root, {"road": saved})


CALLS = 40
CALL_PERIOD_S = 0.1
ANSWER_TIMEOUT_S = 2.5  # the client's timeout; the recorder's write_timeout_s below is 1.0


@pytest.mark.parametrize(
    ("recording", "threads"), [(False, None), (True, 1)], ids=["manual", "while_recording-one_thread"]
)
def test_every_capture_is_answered_in_time_while_slow_writes_hold_the_store(ros_context, tmp_path, recording, threads):
    """Writes take 150 ms and hold the store's lock; a capture call arrives every 100 ms (and, in one
    variant, continuous recording competes for the writer): every call is answered within the client's
    timeout, with the saved path or a refusal that says why, and the dataset matches the answers.
    The recorder spins in an executor of its own: single-threaded, as its entry point runs it, and in a
    one-thread MultiThreadedExecutor (any executor must do)."""
    ns, root = unique_ns("recorder_test"), tmp_path / "ds"
    recorder = _recorder(
        ros_context, ns, root, image_format="png", write_timeout_s=1.0, capture_rate_hz=2.0, max_frame_age_s=30.0
    )
    slow_store(recorder._store, 0.15)
    source = FrameSource(ros_context, ns)
    sent: dict[int, float] = {}
    answered: dict[int, float] = {}
    lock = threading.Lock()

    def capture(i: int) -> Reply:
        """One capture call through the client, each on its own thread, so that the calls overlap."""
        reply = teacher.capture(timeout_s=ANSWER_TIMEOUT_S + 1.0)
        if reply.result in (Result.SUCCEEDED, Result.REFUSED):  # answered by the recorder
            with lock:
                answered.setdefault(i, time.monotonic())
        return reply

    with (
        Spinner(ros_context, recorder, threads=threads),
        Spinner(ros_context, source),
        graph_client(ros_context, ns) as teacher,
        ThreadPoolExecutor(max_workers=CALLS) as pool,
    ):
        _label(teacher, "cup")
        _frame_delivered(recorder, source, _pixels(1000))
        assert teacher.wait_for_services(DISCOVERY_S, ["capture", "set_recording"]) == []
        if recording:
            assert teacher.set_recording(True).ok, teacher.last_error
        diags_before = len(teacher.health_history("recorder_node"))
        futures = []
        start = time.monotonic()
        for i in range(CALLS):
            source.image_pub.publish(_image_msg(_pixels(2000 + i)))
            sent[i] = time.monotonic()
            futures.append(pool.submit(capture, i))
            time.sleep(max(0.0, start + (i + 1) * CALL_PERIOD_S - time.monotonic()))
        replies = [f.result() for f in futures]  # each call ends within its own deadline
        end = time.monotonic()
        if recording:
            assert teacher.set_recording(False).ok, teacher.last_error
        with lock:
            seen = dict(answered)
        times = {i: seen.get(i, end) - sent[i] for i in range(CALLS)}
        print(
            f"answers: {len(seen)}/{CALLS} ({sum(r.ok for r in replies)} saved), "
            f"answer time p50 {statistics.median(times.values()):.3f} s, "
            f"max {max(times.values()):.3f} s (unanswered counted at {end - start:.1f} s)"
        )
        missing = [i for i in range(CALLS) if i not in seen]
        assert not missing, f"{len(missing)} of {CALLS} capture calls never answered: {missing}"
        late = {i: round(t, 3) for i, t in times.items() if t > ANSWER_TIMEOUT_S}
        assert not late, f"answered after the client's {ANSWER_TIMEOUT_S} s timeout: {late}"
        # the recorder kept publishing diagnostics while the writes held the store
        statuses = teacher.health_history("recorder_node", diags_before)
        assert len(statuses) >= 2, statuses
        saved = [r for r in replies if r.ok]
        for r in replies:
            if r.ok:
                assert r.message.startswith("saved ") and Path(r.path).parent.name == "cup", r.message
            else:
                assert "write_timeout_s" in r.message or r.message.startswith("duplicate"), r.message
        assert len(saved) >= CALLS // 4, [r.message for r in replies]
        assert wait_for(lambda: recorder.pending_jobs == 0, timeout=DEADLINE_S)
        total = sum(_disk(root).values())
        _assert_consistent(root, {"cup": total}, _last_counts(teacher, lambda c: c.total == total))
        # every saved answer names a file that is there (a "may still complete" one can add more)
        assert all(Path(r.path).is_file() for r in saved)
        assert total >= len(saved)


def test_second_recorder_on_the_same_dataset_exits_1_with_one_clear_line(node_process, tmp_path):
    root = tmp_path / "ds"
    with DatasetStore(root):  # holds the writer lock, like a running recorder
        proc = node_process("recorder_node", "-p", f"dataset_dir:={root}")
        assert proc.wait(timeout=30) == 1
    assert "already open for writing" in proc.stderr()
    assert "Traceback" not in proc.stderr()


def _camera_process(node_process, ns: str) -> NodeProcess:
    return node_process("camera_node", "-r", f"__ns:={ns}", "-p", "width:=64", "-p", "height:=48", "-p", "fps:=15.0")


def _recorder_process(node_process, ns: str, root: Path, *params: str) -> NodeProcess:
    return node_process("recorder_node", "-r", f"__ns:={ns}", "-p", f"dataset_dir:={root}", *params)


def _capture_new(teacher: Teacher, n: int) -> None:
    """Make ``n`` successful captures; a repeat of an already saved frame (duplicate) is retried."""
    done = 0

    def step() -> bool:
        nonlocal done
        r = teacher.capture()
        assert r.ok or (refused(r) and r.message.startswith("duplicate")), r.message
        done += r.ok
        return done == n

    assert wait_for(step, timeout=DEADLINE_S, interval=0.05)


def test_camera_recorder_and_client_across_processes(node_process, ros_context, tmp_path):
    ns, root = unique_ns("recorder_test"), tmp_path / "ds"
    camera = _camera_process(node_process, ns)
    recorder = _recorder_process(node_process, ns, root, "-p", "max_frame_age_s:=0.5", "-p", "capture_rate_hz:=10.0")
    source = FrameSource(ros_context, ns)
    with Spinner(ros_context, source), graph_client(ros_context, ns) as teacher:
        assert teacher.wait_for_services(DISCOVERY_S, ["capture", "undo", "set_recording"]) == [], recorder.output()
        r = teacher.capture()
        assert refused(r, "no teach label"), (r, recorder.output())
        source.say_label(teacher, "../x")  # raw: the client refuses to send it
        r = teacher.capture()
        assert refused(r, "invalid label"), r
        assert _disk(root) == Counter()
        # Across processes the recorder may discover the camera seconds after the client: captures
        # before its first frame are refused as "no frame received yet", which is right, not tested here.
        assert teacher.wait_for_health(
            "recorder_node", lambda h: int(h.values.get("frames_received", "0")) > 0, DISCOVERY_S
        ), recorder.output()
        _label(teacher, "free")
        _capture_new(teacher, 3)
        _label(teacher, "blocked")
        _capture_new(teacher, 2)
        r = teacher.undo()
        assert r.ok and "removed blocked/" in r.message, r.message
        _last_counts(teacher, lambda c: c == Counts({"blocked": 1, "free": 3}))
        _assert_consistent(root, {"blocked": 1, "free": 3})
        # continuous capture under a third label, then stop
        _label(teacher, "left")
        assert teacher.set_recording(True).ok, teacher.last_error
        _last_counts(teacher, lambda c: c.per_class.get("left", 0) >= 4)
        assert teacher.set_recording(False).ok, teacher.last_error
        assert teacher.wait_for_health(
            "recorder_node",
            lambda h: h.values.get("recording") == "False" and h.values.get("queue_depth") == "0",
            DEADLINE_S,
        ), teacher.last_error
        counts = _last_counts(teacher, lambda c: c.total == sum(_disk(root).values()))
        expected = dict(counts.per_class)
        assert expected["free"] == 3 and expected["blocked"] == 1 and expected["left"] >= 4
        _assert_consistent(root, expected, counts)
        # the camera stops: once the newest frame is older than max_frame_age_s, capture is refused
        assert stop_and_check(camera, "int") == 0
        assert teacher.wait_for_health(
            "recorder_node", lambda h: float(h.values.get("frame_age_s", "0")) > 0.5, DEADLINE_S
        ), teacher.last_error
        r = teacher.capture()
        assert refused(r, "stale frame"), r.message
    assert stop_and_check(recorder, "int") == 0
    assert "Traceback" not in recorder.stderr(), recorder.stderr()
    assert f"closed: {sum(expected.values())} images" in recorder.output()
    _assert_consistent(root, expected)


RECORDING = {  # what the recorder is started with, per task: classification takes its label from the client
    "classification": (),
    "regression": ("-p", "task:=regression", "-p", "target_xy:=[0.25,-0.5]"),
}


@pytest.mark.parametrize(
    "task,mode",
    [
        ("classification", "int"),
        ("classification", "int2"),
        ("classification", "term"),
        ("regression", "int2"),
        ("regression", "term"),
    ],
)
def test_recorder_process_exits_0_with_the_dataset_consistent_after_signals(
    node_process, ros_context, tmp_path, task, mode
):
    """Stopped while recording, the recorder exits 0; every image on disk has its manifest line (and its target)."""
    ns, root = unique_ns("recorder_test"), tmp_path / "ds"
    recorder = _recorder_process(node_process, ns, root, "-p", "capture_rate_hz:=20.0", *RECORDING[task])
    camera = CameraNode(context=ros_context, namespace=ns, parameter_overrides=overrides(CAMERA_64x48_30HZ))
    with Spinner(ros_context, camera), graph_client(ros_context, ns) as teacher:
        if task == "classification":
            _label(teacher, "free")
        assert teacher.set_recording(True, timeout_s=DISCOVERY_S).ok, (teacher.last_error, recorder.output())
        _last_counts(teacher, lambda c: c.total >= 3)
        assert stop_and_check(recorder, mode) == 0  # while recording
    assert "Traceback" not in recorder.stderr(), recorder.stderr()
    assert "closed:" in recorder.output()
    lines = _manifest(root)
    assert len(lines) == sum(_disk(root).values()) >= 3
    if task == "regression":
        assert set(_disk(root)) == {"xy"}
        assert all(line["xy"] == [0.25, -0.5] for line in lines), lines
    with DatasetStore(root) as store:  # the lock was released and nothing needs repair
        assert store.repair_report.clean, store.repair_report.summary()
