"""camera_node over real topics: in one process, across processes, for every file-backed source,
with a vanished camera, across processes at 30 Hz for 640x480 and 1280x720, and on shutdown."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from graphutil import Collector, Spinner, graph_client, ros_args, stop_and_check, wait_for
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from dli_perception.core.imaging import imgmsg_to_cv2
from dli_perception.nodes.camera_node import CameraNode
from dli_perception.nodes.qos import EVENTS, SENSOR_DATA

pytestmark = pytest.mark.graph
REPO = Path(__file__).resolve().parents[2]
DISCOVERY_S = 20.0  # deadline for the first message across processes (discovery took up to ~3 s here)


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _params(**values) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def test_in_process_frames_have_size_encoding_stamps_and_camera_info(ros_context):
    t_start = time.time_ns()
    camera = CameraNode(
        context=ros_context, parameter_overrides=_params(width=96, height=64, fps=20.0, frame_id="cam_optical")
    )
    images = Collector(ros_context, Image, "image_raw", SENSOR_DATA, name="images")
    infos = Collector(ros_context, CameraInfo, "camera_info", SENSOR_DATA, name="infos")
    with Spinner(ros_context, camera, images, infos):
        assert wait_for(lambda: images.count() >= 10 and infos.count() >= 5, timeout=DISCOVERY_S)
    msgs = list(images.msgs)
    for msg in msgs:
        assert (msg.width, msg.height, msg.encoding, msg.step) == (96, 64, "rgb8", 96 * 3)
        assert len(msg.data) == 96 * 64 * 3
        assert msg.header.frame_id == "cam_optical"
    stamps = [_stamp_ns(m) for m in msgs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert t_start <= stamps[0] and stamps[-1] <= time.time_ns()
    # receive minus capture time is positive and small: the stamp is the capture time, not a later one
    assert all(0 <= r - s < 5e9 for r, s in zip(images.received_ns[: len(stamps)], stamps, strict=True))
    info = infos.msgs[-1]
    assert (info.width, info.height, info.header.frame_id) == (96, 64, "cam_optical")
    assert info.k[2] == 48.0 and info.k[5] == 32.0 and info.k[0] > 0


def test_frames_are_built_and_sent_only_while_someone_subscribes(ros_context):
    camera = CameraNode(context=ros_context, parameter_overrides=_params(width=96, height=64, fps=30.0))
    with Spinner(ros_context, camera) as spinner:
        assert wait_for(lambda: camera.published >= 10, timeout=DISCOVERY_S)
        assert camera.sent == 0  # nobody subscribed: nothing converted or serialised
        images = spinner.add(Collector(ros_context, Image, "image_raw", SENSOR_DATA, name="late_images"))
        assert wait_for(lambda: images.count() >= 3, timeout=DISCOVERY_S)
        assert camera.sent >= 3 and camera.published > camera.sent


def _two_colour_picture(width: int, height: int) -> np.ndarray:
    """RGB picture whose red and blue channels differ everywhere: orange left half, blue right half."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (230, 120, 20)
    rgb[:, width // 2 :] = (20, 60, 200)
    return rgb


def test_run_time_parameters_are_validated_and_applied(ros_context, tmp_path):
    picture = _two_colour_picture(32, 24)
    (tmp_path / "slides").mkdir()
    assert cv2.imwrite(str(tmp_path / "slides" / "picture.png"), picture[..., ::-1])  # OpenCV writes BGR
    camera = CameraNode(
        context=ros_context,
        parameter_overrides=_params(source="folder", path=str(tmp_path / "slides"), width=32, height=24, fps=30.0),
    )
    images = Collector(ros_context, Image, "image_raw", SENSOR_DATA)
    with Spinner(ros_context, camera, images):
        assert wait_for(lambda: images.count() >= 2, timeout=DISCOVERY_S)
        results = camera.set_parameters(
            [Parameter("flip", value="sideways"), Parameter("fps", value=0.0), Parameter("width", value=64)]
        )
        assert [r.successful for r in results] == [False, False, False]
        assert "sideways" in results[0].reason
        assert camera.set_parameters([Parameter("encoding", value="bgr8")])[0].successful
        n = images.count()
        assert wait_for(lambda: images.count() >= n + 3 and images.msgs[-1].encoding == "bgr8", timeout=10)
    rgb = [m for m in images.msgs if m.encoding == "rgb8"][-1]
    bgr = images.msgs[-1]
    # The same lossless picture with distinct red and blue: the bytes are in the order each encoding names.
    raw_rgb = np.frombuffer(bytes(rgb.data), np.uint8).reshape(24, 32, 3)
    raw_bgr = np.frombuffer(bytes(bgr.data), np.uint8).reshape(24, 32, 3)
    np.testing.assert_array_equal(raw_rgb, picture)
    np.testing.assert_array_equal(raw_bgr, picture[..., ::-1])
    np.testing.assert_array_equal(imgmsg_to_cv2(bgr, "rgb8"), picture)


def _frames_via_process(node_process, ros_context, count: int, **params) -> tuple[list[Image], object]:
    proc = node_process("camera_node", *ros_args(**params))
    images = Collector(ros_context, Image, "image_raw", SENSOR_DATA)
    with Spinner(ros_context, images):
        ok = wait_for(lambda: images.count() >= count, timeout=DISCOVERY_S)
        assert ok, f"got {images.count()} frames; node output:\n{proc.output()}"
    return list(images.msgs), proc


def test_synthetic_source_across_processes(node_process, ros_context):
    msgs, proc = _frames_via_process(node_process, ros_context, 5, width=80, height=60, fps=15.0)
    assert all((m.width, m.height, m.encoding) == (80, 60, "rgb8") for m in msgs)
    assert stop_and_check(proc, "int") == 0


def _write_video(path: Path, colours: list[tuple[int, int, int]], size=(64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for rgb in colours:
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:] = rgb[::-1]  # OpenCV writes BGR
        writer.write(frame)
    writer.release()


def test_video_file_source_loops_its_frames(node_process, ros_context, tmp_path):
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)] * 2
    video = tmp_path / "clip.avi"
    _write_video(video, colours)
    msgs, proc = _frames_via_process(
        node_process, ros_context, 8, source="video", path=str(video), width=64, height=48, fps=20.0
    )
    seen = set()
    for m in msgs:
        mean = imgmsg_to_cv2(m, "rgb8").reshape(-1, 3).mean(0)
        match = [i for i, c in enumerate(colours[:3]) if np.abs(mean - np.array(c)).max() < 20]  # MJPG is lossy
        assert match, mean
        seen.add(match[0])
    assert seen == {0, 1, 2}
    assert stop_and_check(proc, "int") == 0


def test_video_file_without_loop_stops_at_its_end_and_keeps_running(node_process, tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, [(100, 100, 100)] * 12)
    proc = node_process("camera_node", *ros_args(source="video", path=str(video), loop=False, fps=30.0))
    assert wait_for(lambda: "end of video stream after 12 frames" in proc.output(), timeout=DISCOVERY_S), proc.output()
    assert proc.proc.poll() is None, "the node keeps running after the end of a non-looping video"
    assert stop_and_check(proc, "int2") == 0
    assert "Traceback" not in proc.stderr()


def test_image_folder_slideshow_skips_corrupt_files(node_process, ros_context, tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    colours = {"a.png": (200, 30, 30), "b.jpg": (30, 200, 30), "c.png": (30, 30, 200)}
    for name, rgb in colours.items():
        img = np.zeros((40, 50, 3), np.uint8)
        img[:] = rgb[::-1]
        assert cv2.imwrite(str(folder / name), img)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    msgs, proc = _frames_via_process(
        node_process, ros_context, 8, source="folder", path=str(folder), width=50, height=40, fps=20.0
    )
    seen = set()
    for m in msgs:
        mean = imgmsg_to_cv2(m, "rgb8").reshape(-1, 3).mean(0)
        match = [n for n, c in colours.items() if np.abs(mean - np.array(c)).max() < 12]
        assert match, mean
        seen.add(match[0])
    assert seen == set(colours), seen
    assert stop_and_check(proc, "term") == 0
    assert "Traceback" not in proc.stderr()


def test_missing_camera_is_retried_and_reported_not_fatal(node_process, ros_context):
    proc = node_process(
        "camera_node", *ros_args({"source": "v4l2", "device": "/dev/video99", "reconnect.initial_s": 0.1})
    )

    def failing(health) -> bool:  # an error report with at least three failed opens
        return health.level == "error" and int(health.values.get("failures", "0")) >= 3

    with graph_client(ros_context) as client:
        status = client.wait_for_health("camera_node", failing, DISCOVERY_S)
    assert status is not None, (client.last_error, proc.output())
    assert "camera unavailable" in status.message and "/dev/video99" in status.message
    assert proc.proc.poll() is None
    assert stop_and_check(proc, "int") == 0
    assert "Traceback" not in proc.stderr()


@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_exit_code_zero_and_camera_released_after_signals(node_process, ros_context, mode):
    proc = node_process("camera_node", *ros_args(width=64, height=48))
    images = Collector(ros_context, Image, "image_raw", SENSOR_DATA)
    with Spinner(ros_context, images):
        assert wait_for(lambda: images.count() >= 3, timeout=DISCOVERY_S), proc.output()
    assert stop_and_check(proc, mode) == 0
    assert "Traceback" not in proc.stderr(), proc.stderr()
    assert "camera released after" in proc.output()


def _stamp_windows(log: "_FrameLog", fps: float, span_s: float = 2.0) -> list[dict]:
    """Over the received history of a fixed-rate publisher: for each frame, the ``span_s`` window of stamps
    starting there, with the fraction of the ``span_s * fps`` frames sent in it that arrived."""
    stamps = sorted({s for _, s in list(log.frames)})
    windows, j = [], 0
    for i, start in enumerate(stamps):
        end = start + span_s * 1e9
        if stamps[-1] < end:
            break
        j = max(j, i)
        while j < len(stamps) and stamps[j] < end:
            j += 1
        windows.append({"start_ns": start, "received": j - i, "delivered": min(1.0, (j - i) / (span_s * fps))})
    return windows


@pytest.mark.parametrize("size", ["640x480", "1280x720"])
def test_30_hz_frames_cross_processes_with_the_shipped_profile(ros_context, size):
    """Sensor-data QoS frames at 30 Hz reach a subscriber in another process (builtin transports: ~5%).

    A publisher process sends one pre-built frame at 30 Hz (benchmarks/transport.py --raw-publisher),
    so the measure is the transport's alone. Asserted over the received history with a deadline: some
    2 s window of stamps in which >= 90 % of the 60 frames sent arrived (depth 1: on a loaded machine
    a newer frame replaces one the subscriber could not take in time).
    """
    publisher = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "transport.py"), "--raw-publisher", size, "30", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        log = _FrameLog(ros_context, "")
        ok = _watch(ros_context, log, lambda: any(w["delivered"] >= 0.9 for w in _stamp_windows(log, 30.0)), 90.0)
    finally:
        publisher.terminate()
        _, err = publisher.communicate(timeout=15)
    best = max(_stamp_windows(log, 30.0), key=lambda w: w["delivered"], default=None)
    assert ok, (best, len(log.frames), err[-2000:])
    width, height = (int(v) for v in size.split("x"))
    assert log.layouts == {(width, height, "rgb8", width * height * 3)}, log.layouts


class _FrameLog(Node):
    """Keeps (receive ns, stamp ns) of every frame, its layout, and (stamp ns, frames_published) of every
    camera report. Only numbers are kept, so a subscriber on a loaded machine spends its time taking frames.
    """

    def __init__(self, context, ns: str) -> None:
        super().__init__("frame_log", context=context)
        self.frames: list[tuple[int, int]] = []
        self.layouts: set[tuple[int, int, str, int]] = set()  # (width, height, encoding, data bytes) seen
        self.reports: list[tuple[int, int]] = []
        self._status_name = f"{ns.strip('/')}/camera_node"
        self.create_subscription(Image, f"{ns}/image_raw", self._on_image, SENSOR_DATA)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, EVENTS)

    def _on_image(self, msg: Image) -> None:
        self.frames.append((time.time_ns(), _stamp_ns(msg)))
        self.layouts.add((msg.width, msg.height, msg.encoding, len(msg.data)))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self._status_name:
                values = {kv.key: kv.value for kv in status.values}
                self.reports.append((_stamp_ns(msg), int(values["frames_published"])))


def _watch(ros_context, log: _FrameLog, condition, timeout: float) -> bool:
    """Spin ``log`` alone in a single-threaded executor (least overhead per frame taken) until
    ``condition()`` holds or ``timeout`` seconds pass; destroys ``log`` afterwards."""
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(log)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        return wait_for(condition, timeout=timeout, interval=0.5)
    finally:
        stop.set()
        spinner.join(timeout=5.0)
        executor.remove_node(log)
        log.destroy_node()
        executor.shutdown(timeout_sec=2.0)


def _windows(log: _FrameLog, span_s: float = 2.0) -> list[dict]:
    """Over the recorded history: each window from one camera report to the first one ``span_s`` later,
    with the camera's publishing rate (its own count) and the fraction of its frames received here."""
    reports, stamps = list(log.reports), sorted({s for _, s in list(log.frames)})
    windows = []
    for i, (t0, p0) in enumerate(reports):
        later = [(t, p) for t, p in reports[i + 1 :] if t - t0 >= span_s * 1e9]
        if not later:
            break
        t1, p1 = later[0]
        published = p1 - p0
        received = sum(1 for s in stamps if t0 < s <= t1)
        window = {
            "rate_hz": published / ((t1 - t0) / 1e9),
            "published": published,
            "received": received,
            "delivered": min(1.0, received / published) if published else 0.0,
        }
        windows.append(window)
    return windows


def _at_30_hz(window: dict) -> bool:
    return window["rate_hz"] >= 27.0 and window["delivered"] >= 0.9


@pytest.mark.parametrize("size", ["640x480", "1280x720"])
def test_camera_node_30_hz_frames_reach_another_process(node_process, ros_context, tmp_path, size):
    """camera_node (its own process, shipped transport profile) publishing at 30 Hz to a subscriber here.

    Asserted over the recorded history with a deadline: some 2 s window between two of the camera's
    reports in which it published at >= 27 Hz (its own count) and >= 90 % of those frames arrived here.
    The source is a folder with one BMP (reading it is a copy), because rendering synthetic 1280x720
    scenes took 43 ms a frame on a loaded 2-core machine: the synthetic renderer is not under test.
    """
    width, height = (int(v) for v in size.split("x"))
    (tmp_path / "frames").mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "frames" / "noise.bmp"), noise)
    ns = f"/cam30_{uuid.uuid4().hex[:8]}"
    params = ros_args(source="folder", path=str(tmp_path / "frames"), width=width, height=height, fps=30.0)
    proc = node_process("camera_node", *params, "-r", f"__ns:={ns}")
    log = _FrameLog(ros_context, ns)
    ok = _watch(ros_context, log, lambda: any(_at_30_hz(w) for w in _windows(log)), 90.0)
    best = max(_windows(log), key=lambda w: min(w["rate_hz"] / 30.0, w["delivered"]), default=None)
    assert ok, (best, len(log.frames), len(log.reports), proc.output()[-2000:])
    assert log.layouts == {(width, height, "rgb8", width * height * 3)}, log.layouts
    assert stop_and_check(proc, "int") == 0
    assert "Traceback" not in proc.stderr()


@pytest.mark.parametrize("bad", ["fps:=0.0", "flip:=sideways", "width:=abc", "source:=webcam"])
def test_invalid_start_parameters_exit_1_with_one_clear_line(node_process, bad):
    proc = node_process("camera_node", "-p", bad)
    assert proc.wait(timeout=30) == 1
    err = proc.stderr()
    assert "Traceback" not in err, err
    assert "[FATAL]" in err and bad.split(":=")[0] in err, err
