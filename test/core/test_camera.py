"""Frame sources on real files and real (missing) devices: video, folders, V4L2, GStreamer, synthetic."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from dli_perception.core.camera import (
    Frame,
    FrameTransform,
    GStreamerSource,
    ImageFolderSource,
    RateKeeper,
    ReconnectingSource,
    SourceConfig,
    SyntheticSource,
    V4L2Source,
    VideoFileSource,
    csi_pipeline,
    gstreamer_available,
    open_source,
)
from dli_perception.core.synthetic import SyntheticScenes
from dli_perception.errors import CameraError, ConfigError

# Distinct RGB colours, one per written frame / image.
COLOURS_RGB = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def _missing_video_device() -> str:
    for n in range(99, 200):
        path = f"/dev/video{n}"
        if not os.path.exists(path):
            return path
    raise AssertionError("no free /dev/videoN name")


def _solid_bgr(rgb: tuple[int, int, int], w: int = 64, h: int = 48) -> np.ndarray:
    return np.full((h, w, 3), rgb[::-1], dtype=np.uint8)


def _dominant(frame: Frame) -> tuple[int, int, int]:
    """Which channels are bright, as (r, g, b) 0/1, read from the centre mean."""
    h, w = frame.image.shape[:2]
    mean = frame.image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)
    return tuple(int(v > 128) for v in mean)


def _expected(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(v > 128) for v in rgb)


@pytest.fixture(params=[("MJPG", ".avi"), ("mp4v", ".mp4")], ids=["mjpg-avi", "mp4v-mp4"])
def video_file(request, tmp_path: Path) -> Path:
    fourcc, ext = request.param
    path = tmp_path / f"clip{ext}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    assert writer.isOpened(), f"OpenCV here cannot write {fourcc} {ext}"
    for rgb in COLOURS_RGB:
        writer.write(_solid_bgr(rgb))
    writer.release()
    assert path.stat().st_size > 0
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, rgb in enumerate(COLOURS_RGB[:4]):
        ext = ".png" if i % 2 == 0 else ".JPG"
        assert cv2.imwrite(str(folder / f"img_{i:02d}{ext}"), _solid_bgr(rgb))
    (folder / "img_01b.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg " * 20)  # sorts between 01 and 02
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    assert cv2.imwrite(str(folder / "sub" / "ignored.png"), _solid_bgr((9, 9, 9)))
    return folder


# --------------------------------------------------------------------------- video files


def test_video_stop_mode_reads_every_frame_then_none(video_file: Path) -> None:
    with VideoFileSource(video_file, loop=False) as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert source.ended
        assert source.read() is None
        assert source.fps == pytest.approx(10.0)
    assert not source.is_open
    assert [f.index for f in frames] == list(range(len(COLOURS_RGB)))
    assert [_dominant(f) for f in frames] == [_expected(c) for c in COLOURS_RGB]
    for f in frames:
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 and f.label is None
    assert all(b.stamp_ns >= a.stamp_ns for a, b in zip(frames, frames[1:], strict=False))


def test_video_loop_mode_starts_again(video_file: Path) -> None:
    n = len(COLOURS_RGB)
    with VideoFileSource(video_file, loop=True, fps=25) as source:
        frames = [source.read() for _ in range(2 * n + 2)]
        assert source.loops == 2
        assert not source.ended
        assert source.fps == 25
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(2 * n + 2))
    expected = [_expected(COLOURS_RGB[i % n]) for i in range(2 * n + 2)]
    assert [_dominant(f) for f in frames] == expected


def test_video_missing_file_and_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        VideoFileSource(tmp_path / "nope.mp4").open()
    with pytest.raises(CameraError, match="not a file"):
        VideoFileSource(tmp_path).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    source = VideoFileSource(junk)
    with pytest.raises(CameraError, match="junk.mp4"):
        source.open()
        source.read()  # some FFmpeg builds open garbage and fail at the first frame
    source.close()


def test_read_before_open_raises() -> None:
    with pytest.raises(CameraError, match="open"):
        SyntheticSource(SyntheticScenes(width=32, height=32)).read()


# --------------------------------------------------------------------------- image folders


def test_folder_stop_mode_sorted_and_skips_corrupt(image_folder: Path, caplog) -> None:
    with ImageFolderSource(image_folder, loop=False) as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert source.skipped == 1
        assert [p.name for p in source.skipped_files] == ["img_01b.jpg"]
    assert [_dominant(f) for f in frames] == [_expected(c) for c in COLOURS_RGB[:4]]
    assert "img_01b.jpg" in caplog.text


def test_folder_loop_mode_counts_corrupt_file_once(image_folder: Path) -> None:
    with ImageFolderSource(image_folder, loop=True) as source:
        frames = [source.read() for _ in range(10)]
        assert source.skipped == 1
        assert source.loops == 2
    assert [_dominant(f) for f in frames] == [_expected(COLOURS_RGB[i % 4]) for i in range(10)]


def test_folder_custom_extensions(image_folder: Path) -> None:
    with ImageFolderSource(image_folder, loop=False, extensions=("png",)) as source:
        names = []
        while source.read() is not None:
            names.append(source.current_file.name)
    assert names == ["img_00.png", "img_02.png"]


def test_folder_empty_missing_file_and_all_corrupt(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(CameraError, match="no images"):
        ImageFolderSource(empty).open()
    with pytest.raises(CameraError, match="does not exist"):
        ImageFolderSource(tmp_path / "missing").open()
    with pytest.raises(CameraError, match="not a folder"):
        ImageFolderSource(empty / "readme.txt").open()
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"{i}.png").write_bytes(b"garbage")
    with ImageFolderSource(bad) as source:
        with pytest.raises(CameraError, match="unreadable"):
            source.read()
        assert source.skipped == 2


# --------------------------------------------------------------------------- live devices


def test_v4l2_missing_device_raises_clear_error() -> None:
    path = _missing_video_device()
    with pytest.raises(CameraError, match=path):
        V4L2Source(path).open()
    with pytest.raises(CameraError, match=path):
        V4L2Source(int(path.removeprefix("/dev/video"))).open()


def test_v4l2_not_a_camera_raises() -> None:
    with pytest.raises(CameraError, match="/dev/null"):
        V4L2Source("/dev/null").open()


def test_v4l2_bad_arguments_are_config_errors() -> None:
    for kwargs in ({"device": -1}, {"device": ""}, {"width": 0}, {"fourcc": "MJPEG"}):
        with pytest.raises(ConfigError):
            V4L2Source(**kwargs)


def test_gstreamer_unavailable_or_pipeline_fails_with_camera_error() -> None:
    info = cv2.getBuildInformation()
    built_with = any(line.strip().startswith("GStreamer:") and "YES" in line.upper() for line in info.splitlines())
    assert gstreamer_available() == built_with
    source = GStreamerSource(csi_pipeline())
    if built_with:
        with pytest.raises(CameraError, match="pipeline"):  # no Jetson CSI camera on a test machine
            source.open()
    else:
        with pytest.raises(CameraError, match="without GStreamer"):
            source.open()
    assert not source.is_open


def test_gstreamer_pipeline_must_have_appsink() -> None:
    with pytest.raises(ConfigError, match="appsink"):
        GStreamerSource("videotestsrc ! autovideosink")
    with pytest.raises(ConfigError):
        GStreamerSource("  ")


def test_csi_pipeline_string() -> None:
    text = csi_pipeline(sensor_id=1, width=960, height=540, fps=30, flip_method=2)
    assert text.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=960, height=540")
    assert "framerate=30/1" in text
    assert "nvvidconv flip-method=2 ! video/x-raw, width=960, height=540, format=BGRx" in text
    assert text.endswith("videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1")
    assert "framerate=2997/100" in csi_pipeline(fps=29.97)
    assert "width=1920, height=1080" in csi_pipeline(width=640, height=360, capture_width=1920, capture_height=1080)
    for kwargs in ({"flip_method": 8}, {"sensor_id": -1}, {"fps": 0}):
        with pytest.raises(ConfigError):
            csi_pipeline(**kwargs)


# --------------------------------------------------------------------------- reconnecting


def test_reconnecting_missing_device_backs_off_and_never_raises() -> None:
    clock = FakeClock()
    path = _missing_video_device()
    calls = []

    def factory():
        calls.append(clock.t)
        return V4L2Source(path)

    source = ReconnectingSource(factory, backoff_initial=0.5, backoff_max=4.0, clock=clock)
    source.open()  # does not raise
    assert source.is_open and not source.connected
    assert source.failures == 1 and path in source.last_error
    delays = []
    for _ in range(6):
        wait = source.retry_in()
        delays.append(wait)
        clock.advance(wait - 0.01)
        assert source.read() is None  # not due yet: no attempt
        attempts = len(calls)
        clock.advance(0.01)
        assert source.read() is None  # due: one attempt, fails again
        assert len(calls) == attempts + 1
    assert delays == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
    assert source.failures == 7 and source.reconnects == 0
    source.close()
    assert not source.is_open


def test_reconnecting_recovers_when_images_come_back(tmp_path: Path) -> None:
    clock = FakeClock()
    folder = tmp_path / "cam"
    folder.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(folder / f"{i}.png"), _solid_bgr(COLOURS_RGB[i]))
    source = ReconnectingSource(lambda: ImageFolderSource(folder), backoff_initial=1.0, clock=clock)
    with source:
        first = [source.read() for _ in range(2)]
        assert all(f is not None for f in first) and source.failures == 0
        # The "device" breaks: images become unreadable (truncated), then the folder empties.
        for p in folder.iterdir():
            p.write_bytes(b"")
        assert source.read() is None
        assert source.failures == 1 and "unreadable" in source.last_error and not source.connected
        for p in folder.iterdir():
            p.unlink()
        clock.advance(1.0)
        assert source.read() is None  # retry: folder empty
        assert source.failures == 2 and "no images" in source.last_error
        assert source.retry_in() == pytest.approx(2.0)
        assert cv2.imwrite(str(folder / "new.png"), _solid_bgr(COLOURS_RGB[3]))
        clock.advance(2.0)
        frame = source.read()
        assert frame is not None and source.connected and source.reconnects == 1
        assert _dominant(frame) == _expected(COLOURS_RGB[3])
        assert [f.index for f in first] + [frame.index] == [0, 1, 2]  # numbering continues


def test_reconnecting_config_error_propagates() -> None:
    def factory():
        return V4L2Source(device=-3)

    with pytest.raises(ConfigError):
        ReconnectingSource(factory).open()
    with pytest.raises(ConfigError):
        ReconnectingSource(factory, backoff_initial=5, backoff_max=1)


# --------------------------------------------------------------------------- synthetic source


def test_synthetic_schedule_time_labels_and_stamps() -> None:
    scenes = SyntheticScenes(("a", "b", "c"), 64, 48, seed=2)
    source = SyntheticSource(scenes, fps=10, scene_period=1.0, realtime=False, time_ns=lambda: 5_000_000_000)
    with source:
        frames = [source.read() for _ in range(35)]
    assert [f.label for f in frames] == ["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["a"] * 5
    assert [f.stamp_ns for f in frames[:3]] == [5_000_000_000, 5_100_000_000, 5_200_000_000]
    for f in frames:
        assert source.class_at((f.stamp_ns - source.start_ns) / 1e9) == f.label
    np.testing.assert_array_equal(frames[12].image, scenes.render("b", 12))


def test_synthetic_realtime_follows_the_clock_and_caps_frames() -> None:
    now = [1_000_000_000]
    scenes = SyntheticScenes(("x", "y"), 32, 32, scene_period=0.5)
    source = SyntheticSource(scenes, fps=30, realtime=True, max_frames=3, time_ns=lambda: now[0])
    with source:
        labels = []
        for dt in (0, 600_000_000, 500_000_000):
            now[0] += dt
            labels.append(source.read().label)
        assert source.read() is None and source.ended
    assert labels == ["x", "y", "x"]


def test_synthetic_transform_applies() -> None:
    scenes = SyntheticScenes(("x",), 40, 30)
    source = SyntheticSource(scenes, realtime=False, transform=FrameTransform(rotate=90, width=20, height=10))
    with source:
        frame = source.read()
    assert frame.image.shape == (10, 20, 3) and frame.image.flags.c_contiguous


# --------------------------------------------------------------------------- transforms


@pytest.fixture
def tiny() -> np.ndarray:
    """2 rows x 3 columns, every pixel different."""
    return np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10


def test_flips_exact(tiny: np.ndarray) -> None:
    assert FrameTransform().apply(tiny) is tiny
    np.testing.assert_array_equal(FrameTransform(flip="horizontal").apply(tiny), tiny[:, ::-1])
    np.testing.assert_array_equal(FrameTransform(flip="vertical").apply(tiny), tiny[::-1])
    np.testing.assert_array_equal(FrameTransform(flip="both").apply(tiny), tiny[::-1, ::-1])


def test_rotations_clockwise_exact(tiny: np.ndarray) -> None:
    r90 = FrameTransform(rotate=90).apply(tiny)
    assert r90.shape == (3, 2, 3)
    # clockwise: the top-left pixel goes to the top-right, the bottom-left to the top-left
    np.testing.assert_array_equal(r90[0, 1], tiny[0, 0])
    np.testing.assert_array_equal(r90[0, 0], tiny[1, 0])
    np.testing.assert_array_equal(r90, np.rot90(tiny, k=-1))
    np.testing.assert_array_equal(FrameTransform(rotate=180).apply(tiny), tiny[::-1, ::-1])
    np.testing.assert_array_equal(FrameTransform(rotate=270).apply(tiny), np.rot90(tiny, k=1))
    # flip first, then rotate
    np.testing.assert_array_equal(
        FrameTransform(flip="horizontal", rotate=90).apply(tiny), np.rot90(tiny[:, ::-1], k=-1)
    )


def test_resize_and_bad_values(tiny: np.ndarray) -> None:
    out = FrameTransform(width=6, height=4).apply(tiny)
    assert out.shape == (4, 6, 3)
    for kwargs in (
        {"flip": "sideways"},
        {"rotate": 45},
        {"rotate": "ninety"},
        {"width": 10},
        {"width": -1, "height": 2},
    ):
        with pytest.raises(ConfigError):
            FrameTransform(**kwargs)


# --------------------------------------------------------------------------- rate keeper


def test_rate_keeper_counts_late_and_dropped() -> None:
    clock = FakeClock(10.0)
    rate = RateKeeper(10.0, clock=clock)
    assert rate.due() and rate.time_until_due() == 0.0
    rate.mark(True)  # slot 0 at t=10.0
    assert not rate.due() and rate.time_until_due() == pytest.approx(0.1)
    clock.advance(0.1)
    assert rate.due()
    rate.mark(False)  # slot 1: the source had nothing
    clock.advance(0.35)  # t = 10.45: slots 2 and 3 passed, slot 4 is current
    rate.mark(True)
    assert (rate.delivered, rate.dropped, rate.late) == (2, 1, 2)
    assert rate.next_due == pytest.approx(10.5)
    clock.advance(0.05)
    rate.mark(True)
    assert rate.late == 2 and rate.measured_fps == pytest.approx(2 / 0.5)
    rate.reset()
    assert (rate.delivered, rate.dropped, rate.late, rate.next_due) == (0, 0, 0, None)
    with pytest.raises(ConfigError):
        RateKeeper(0)


# --------------------------------------------------------------------------- configuration and factory


def test_open_source_builds_each_kind(tmp_path: Path, video_file: Path, image_folder: Path) -> None:
    src = open_source(SourceConfig(kind="synthetic", classes="up, down", width=80, height=60, fps=15))
    assert isinstance(src, SyntheticSource) and src.scenes.classes == ("up", "down") and src.fps == 15
    with src:
        frame = src.read()
    assert frame.image.shape == (60, 80, 3) and frame.label == "up"

    src = open_source(SourceConfig(kind="video", path=str(video_file), loop=False, rotate=90))
    with src:
        assert src.read().image.shape == (64, 48, 3)

    src = open_source(SourceConfig(kind="folder", path=str(image_folder), output_width=32, output_height=16))
    with src:
        assert src.read().image.shape == (16, 32, 3)

    missing = _missing_video_device()
    assert isinstance(open_source(SourceConfig(kind="v4l2", device=missing)), ReconnectingSource)
    plain = open_source(SourceConfig(kind="v4l2", device=missing, reconnect=False))
    assert isinstance(plain, V4L2Source)
    with pytest.raises(CameraError, match=missing):
        plain.open()
    csi = open_source(SourceConfig(kind="csi", sensor_id=1, reconnect=False))
    assert isinstance(csi, GStreamerSource) and "sensor-id=1" in csi.pipeline
    with pytest.raises(CameraError, match="does not exist"):
        open_source(SourceConfig(kind="video", path=str(tmp_path / "gone.mp4"))).open()


def test_open_source_live_kind_with_reconnect_never_raises() -> None:
    src = open_source(SourceConfig(kind="csi", backoff_initial=0.25))
    with src:
        assert src.read() is None
    assert src.failures >= 1 and src.last_error


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "webcam"}, "kind:=v4l2"),
        ({"kind": "video"}, "path:="),
        ({"kind": "folder", "path": " "}, "path:="),
        ({"kind": "gstreamer"}, "appsink"),
        ({"width": 0}, "width"),
        ({"fps": -1}, "fps"),
        ({"flip": "x"}, "flip"),
        ({"rotate": 30}, "rotate"),
        ({"output_width": 100}, "output width and height"),
        ({"classes": ("a", "a")}, "unique"),
        ({"fourcc": "H264X"}, "fourcc"),
        ({"flip_method": 9}, "flip_method"),
        ({"kind": "v4l2", "device": ""}, "device"),
        ({"backoff_initial": 0}, "backoff"),
    ],
)
def test_source_config_errors_say_what_to_type(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        SourceConfig(**kwargs)


def test_source_config_normalises() -> None:
    cfg = SourceConfig(kind=" Synthetic ", classes=["a", "b"])
    assert cfg.kind == "synthetic" and cfg.classes == ("a", "b")
    assert open_source(cfg).name.startswith("synthetic[a,b]")
    with pytest.raises(ConfigError):
        open_source({"kind": "synthetic"})


def test_copy_of_folder_is_independent(image_folder: Path, tmp_path: Path) -> None:
    """Files listed at open(): a file removed afterwards is skipped and counted, not fatal."""
    copy = tmp_path / "copy"
    shutil.copytree(image_folder, copy)
    with ImageFolderSource(copy, loop=False) as source:
        (copy / "img_02.png").unlink()
        count = 0
        while source.read() is not None:
            count += 1
    assert count == 3 and source.skipped == 2  # the corrupt file and the removed one
