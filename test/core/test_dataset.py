"""DatasetStore: layout, manifest, labels, undo, limits, dedup, split, repair and write failures.

Everything runs on real files in tmp dirs. Write failures are produced by the kernel, not by
mocks: a per-process file size limit (RLIMIT_FSIZE, works for any user), a read-only
directory (chmod for a normal user; for root, which ignores chmod, a read-only tmpfs when
mounting is allowed) and a full disk (a tiny tmpfs, needs root and mount permission).
Crashes are real child processes that end with ``os._exit`` at a chosen point or get SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dli_perception.core import fsutil
from dli_perception.core.dataset import (
    LOCK_NAME,
    MANIFEST_NAME,
    DatasetStore,
    import_folder,
    is_no_label,
    validate_label,
)
from dli_perception.errors import (
    ClassFullError,
    ConfigError,
    DatasetError,
    ImageConversionError,
    InvalidLabelError,
)

REPO = Path(__file__).resolve().parents[2]


def frame(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth random RGB image (JPEG keeps it close) that differs per seed."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def noise(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Pure noise: large JPEG files (for filling disks and size limits)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def manifest_lines(root: Path) -> list[dict]:
    path = root / MANIFEST_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def image_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.glob("*/*")
        if p.is_file() and p.suffix in (".jpg", ".png") and not p.name.startswith(".")
    }


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def assert_consistent(root: Path) -> None:
    """Every manifest line has its file and every image file has a line; no temp files."""
    lines = manifest_lines(root)
    files = [d["file"] for d in lines]
    assert len(files) == len(set(files))
    assert set(files) == image_files(root)
    for d in lines:
        path = root / d["file"]
        assert fsutil.sha256_file(path) == d["sha256"]
    assert temp_files(root) == []


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cup", "cup"),
        ("  red cup\t", "red cup"),
        ("cafe\u0301", "caf\u00e9"),  # NFD in, NFC out: one directory per name
        ("x" * 64, "x" * 64),
        ("thumbs_up-2", "thumbs_up-2"),
        ("a.b", "a.b"),
    ],
)
def test_validate_label_accepts_and_normalises(name, expected):
    assert validate_label(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "a/b",
        "a\\b",
        "/etc",
        "..",
        "../outside",
        "a..b",
        ".hidden",
        "none",
        "None",
        " UNKNOWN ",
        "x" * 65,
        "a\nb",
        "a\x00b",
        "a\x1bb",
        "zero\u200bwidth",
        "manifest.jsonl",
        "_total",
        3,
        None,
    ],
)
def test_validate_label_refuses(name):
    with pytest.raises(InvalidLabelError):
        validate_label(name)


def test_is_no_label():
    assert is_no_label(None) and is_no_label("") and is_no_label(" None ") and is_no_label("unknown")
    assert not is_no_label("cup")


@pytest.mark.parametrize("name", ["../escape", "a/b", "none", "", ".git", "x" * 65])
def test_bad_label_writes_nothing(tmp_path, name):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        with pytest.raises(InvalidLabelError):
            store.add(frame(0), name)
        assert store.counts() == {}
    assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# ----------------------------------------------------------------------------- layout


def test_add_writes_imagefolder_layout_and_manifest(tmp_path):
    from torchvision.datasets import ImageFolder

    root = tmp_path / "ds"
    images = {}
    with DatasetStore(root) as store:
        for i, label in enumerate(["cup", "pen", "cup", "mug", "pen", "cup"]):
            img = frame(i)
            result = store.add(img, label, stamp_ns=1_000 + i, source="/image_raw")
            assert not result.duplicate and result.path.is_file() and result.label == label
            assert result.path.parent == root / label and result.path.suffix == ".jpg"
            images[result.file] = img
        assert store.counts() == {"cup": 3, "mug": 1, "pen": 2}
        assert store.classes() == ["cup", "mug", "pen"]
        assert len(store) == 6

    lines = manifest_lines(root)
    assert [d["stamp_ns"] for d in lines] == [1000, 1001, 1002, 1003, 1004, 1005]
    for d in lines:
        assert set(d) == {"file", "class", "stamp_ns", "source", "width", "height", "sha256", "added"}
        assert d["file"].startswith(d["class"] + "/")
        assert (d["width"], d["height"], d["source"]) == (64, 48, "/image_raw")
        assert d["added"].endswith("+00:00")
        decoded = read_rgb(root / d["file"])
        diff = np.abs(decoded.astype(int) - images[d["file"]].astype(int))
        assert diff.mean() < 3.0, d["file"]
    assert_consistent(root)

    folder = ImageFolder(str(root))
    assert folder.classes == ["cup", "mug", "pen"]
    assert len(folder) == 6
    assert sorted(folder.targets) == [0, 0, 0, 1, 2, 2]
    assert folder[0][0].size == (64, 48)


def test_png_format_is_pixel_exact(tmp_path):
    with DatasetStore(tmp_path / "ds", image_format="png") as store:
        img = noise(3)
        result = store.add(img, "cup")
        assert result.path.suffix == ".png"
        np.testing.assert_array_equal(read_rgb(result.path), img)
        grey = noise(4)[:, :, 0]
        result = store.add(grey, "cup")
        np.testing.assert_array_equal(read_rgb(result.path)[:, :, 1], grey)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8)],
)
def test_bad_image_array_is_refused(tmp_path, bad):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        with pytest.raises(ImageConversionError):
            store.add(bad, "cup")
    assert image_files(root) == set() and manifest_lines(root) == []


def test_options_are_validated(tmp_path):
    for kwargs in ({"max_per_class": 0}, {"jpeg_quality": 0}, {"image_format": "gif"}):
        with pytest.raises(ConfigError):
            DatasetStore(tmp_path / "ds", **kwargs)


# ----------------------------------------------------------------------------- dedup, limits, undo


def test_dedupe_by_sha256(tmp_path):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        first = store.add(frame(1), "cup")
        again = store.add(frame(1), "cup")
        other_class = store.add(frame(1), "pen")
        assert again.duplicate and again.path == first.path and again.sha256 == first.sha256
        assert other_class.duplicate and other_class.label == "cup"
        assert store.counts() == {"cup": 1}
    assert len(manifest_lines(root)) == 1 and len(image_files(root)) == 1
    with DatasetStore(root) as store:  # the index survives a reopen
        assert store.add(frame(1), "cup").duplicate
    with DatasetStore(root, dedupe=False) as store:
        assert not store.add(frame(1), "cup").duplicate
        assert store.counts() == {"cup": 2}
    assert_consistent(root)


def test_max_per_class(tmp_path):
    root = tmp_path / "ds"
    with DatasetStore(root, max_per_class=2) as store:
        store.add(frame(1), "cup")
        store.add(frame(2), "cup")
        with pytest.raises(ClassFullError, match="max_per_class=2"):
            store.add(frame(3), "cup")
        store.add(frame(4), "pen")
        assert store.counts() == {"cup": 2, "pen": 1}
        store.undo(2)  # pen, then the last cup
        store.add(frame(3), "cup")
        assert store.counts() == {"cup": 2}
    assert_consistent(root)


def test_undo_removes_last_captures(tmp_path):
    from torchvision.datasets import ImageFolder

    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        results = [store.add(frame(i), label) for i, label in enumerate(["cup", "cup", "pen", "mug", "mug"])]
        assert store.undo(0) == []
        removed = store.undo(2)
        assert [e.file for e in removed] == [r.file for r in results[3:]]
        assert not results[3].path.exists() and not results[4].path.exists()
        assert not (root / "mug").exists()  # ImageFolder refuses empty class directories
        assert store.counts() == {"cup": 2, "pen": 1}
        assert len(ImageFolder(str(root))) == 3
        again = store.add(frame(9), "pen")  # names keep increasing after an undo
        assert again.file != results[3].file
    assert [d["file"] for d in manifest_lines(root)] == [r.file for r in results[:3]] + [again.file]
    assert_consistent(root)
    with DatasetStore(root) as store:
        assert store.counts() == {"cup": 2, "pen": 2}
        assert len(store.undo(100)) == 4
        assert store.counts() == {}
    assert image_files(root) == set() and manifest_lines(root) == []


def test_batch_writes_manifest_in_groups(tmp_path):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        with store.batch(sync_every=10):
            for i in range(12):
                store.add(frame(i), "cup")
            assert len(manifest_lines(root)) == 10  # flushed at 10, two pending
            assert store.counts() == {"cup": 12}
            with pytest.raises(ClassFullError):  # limits see pending images too
                store.max_per_class = 12
                store.add(frame(99), "cup")
        store.max_per_class = None
        assert len(manifest_lines(root)) == 12
    assert_consistent(root)


def test_threads_add_concurrently(tmp_path):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:

        def worker(k: int) -> None:
            for i in range(15):
                store.add(frame(1000 * k + i), f"class{k}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.counts() == {f"class{k}": 15 for k in range(4)}
    assert len(manifest_lines(root)) == 60
    assert_consistent(root)


# ----------------------------------------------------------------------------- split


def test_split_is_stratified_and_reproducible(tmp_path):
    root = tmp_path / "ds"
    sizes = {"solo": 1, "pair": 2, "five": 5, "twenty": 20}
    with DatasetStore(root) as store:
        seed = 0
        for label, n in sizes.items():
            for _ in range(n):
                store.add(frame(seed), label)
                seed += 1
        train, val = store.split(0.2, seed=0)
        assert {e.file for e in train} | {e.file for e in val} == {e.file for e in store.entries}
        assert not {e.file for e in train} & {e.file for e in val}
        val_counts = {label: sum(e.label == label for e in val) for label in sizes}
        assert val_counts == {"solo": 0, "pair": 1, "five": 1, "twenty": 4}
        assert store.split(0.2, seed=0) == (train, val)
        other = store.split(0.2, seed=1)[1]
        assert {e.file for e in other} != {e.file for e in val}
        assert store.split(0.0)[1] == []
        for bad in (-0.1, 1.0):
            with pytest.raises(ConfigError):
                store.split(bad)
    with DatasetStore(root, readonly=True) as store:  # same split after a reopen
        assert store.split(0.2, seed=0) == (train, val)


# ----------------------------------------------------------------------------- lock, read-only open


def test_one_writer_at_a_time(tmp_path):
    root = tmp_path / "ds"
    store = DatasetStore(root)
    store.add(frame(1), "cup")
    with pytest.raises(DatasetError, match="already open for writing"):
        DatasetStore(root)
    reader = DatasetStore(root, readonly=True)
    assert reader.counts() == {"cup": 1}
    with pytest.raises(DatasetError, match="read-only"):
        reader.add(frame(2), "cup")
    store.close()
    with DatasetStore(root) as again:
        assert again.counts() == {"cup": 1}


def test_root_whose_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="cannot create dataset directory"):
        DatasetStore(tmp_path / "file" / "ds")
    with pytest.raises(DatasetError, match="not a directory"):
        DatasetStore(tmp_path / "file")
    with pytest.raises(DatasetError, match="does not exist"):
        DatasetStore(tmp_path / "missing", readonly=True)


def test_symlinked_class_dir_is_never_followed(tmp_path):
    root = tmp_path / "ds"
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "cup").symlink_to(outside, target_is_directory=True)
    with DatasetStore(root) as store:
        assert "cup" in store.repair_report.foreign
        with pytest.raises(DatasetError, match="symbolic link"):
            store.add(frame(1), "cup")
    assert list(outside.iterdir()) == []


# ----------------------------------------------------------------------------- repair on open


def test_reopen_repairs_and_reports(tmp_path):
    from torchvision.datasets import ImageFolder

    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        kept = [store.add(frame(i), "cup") for i in range(3)]
        gone = store.add(frame(10), "pen")
    # What crashes and people leave behind:
    (root / "cup" / f".{kept[0].path.name}.abc123.tmp").write_bytes(b"half an image")
    (root / f".{MANIFEST_NAME}.xyz.tmp").write_text("{")
    orphan = root / "mug" / "000100_orphan.jpg"  # written, then the process died before its line
    orphan.parent.mkdir()
    import cv2

    orphan.write_bytes(cv2.imencode(".jpg", frame(20))[1].tobytes())
    truncated = root / "cup" / "000101_truncated.jpg"
    truncated.write_bytes(kept[1].path.read_bytes()[:300])
    gone.path.unlink()  # a manifest line whose file was deleted by hand
    (root / "empty").mkdir()
    (root / ".ipynb_checkpoints").mkdir()
    with open(root / MANIFEST_NAME, "a") as f:
        f.write('{"file": "cup/000001_x.jpg", "class": "pen"}\n')  # file and class disagree
        f.write("not json\n")
        f.write('{"file": "cup/0000')  # a half-written last line

    with DatasetStore(root) as store:
        report = store.repair_report
        assert report.applied and report.manifest_rewritten and not report.clean
        assert report.adopted == ["mug/000100_orphan.jpg"]
        assert report.dropped_missing == [gone.file]
        assert report.corrupt_lines == [5, 6, 7]
        assert sorted(report.temp_removed) == sorted(
            [f"cup/.{kept[0].path.name}.abc123.tmp", f".{MANIFEST_NAME}.xyz.tmp"]
        )
        assert report.unreadable == ["cup/000101_truncated.jpg"]
        assert report.empty_dirs_removed == ["empty/", "pen/"]  # pen lost its only image
        assert report.foreign == [".ipynb_checkpoints/"]
        assert "adopted=1" in report.summary()
        assert store.counts() == {"cup": 3, "mug": 1}
        entry = store.entries[-1]
        assert (entry.file, entry.source, entry.width, entry.height) == (
            "mug/000100_orphan.jpg",
            "adopted",
            64,
            48,
        )
        store.add(frame(30), "mug")
    assert (root / "cup" / "000101_truncated.jpg.corrupt").exists()
    assert not (root / "empty").exists()
    assert_consistent(root)
    (root / ".ipynb_checkpoints").rmdir()
    assert len(ImageFolder(str(root))) == 5

    with DatasetStore(root) as store:
        assert store.repair_report.clean, store.repair_report.summary()
        assert store.check(verify=True).clean
        (root / "cup" / kept[2].path.name).write_bytes(kept[0].path.read_bytes())
        assert store.check(verify=True).hash_mismatch == [kept[2].file]


def test_readonly_open_reports_without_repairing(tmp_path):
    root = tmp_path / "ds"
    with DatasetStore(root) as store:
        store.add(frame(1), "cup")
    tmp = root / "cup" / ".x.jpg.1.tmp"
    tmp.write_bytes(b"x")
    before = (root / MANIFEST_NAME).read_bytes()
    with DatasetStore(root, readonly=True) as store:
        assert store.repair_report.temp_removed == ["cup/.x.jpg.1.tmp"]
        assert not store.repair_report.applied
        assert "not repaired" in store.repair_report.summary()
    assert tmp.exists() and (root / MANIFEST_NAME).read_bytes() == before


# ----------------------------------------------------------------------------- crashes

CHILD_PRELUDE = """
import os, sys
import numpy as np
from dli_perception.core.dataset import DatasetStore
def frame(seed):
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
store = DatasetStore(sys.argv[1])
"""
#: The two captures each crash test makes before the one it dies in.
TWO_CAPTURES = """
store.add(frame(1), "cup")
store.add(frame(2), "pen")
"""


def die_in_child(root: Path, body: str) -> None:
    """Open the store at ``root`` in a child process that runs ``body`` and dies with exit code 9."""
    proc = run_child(CHILD_PRELUDE + body, str(root))
    assert proc.returncode == 9, proc.stderr


def test_killed_before_rename_leaves_no_image_and_no_line(tmp_path):
    root = tmp_path / "ds"
    body = """
os.replace = lambda *a, **k: os._exit(9)   # die with the temp file complete but not renamed
store.add(frame(3), "cup")
"""
    die_in_child(root, TWO_CAPTURES + body)
    assert len(temp_files(root)) == 1 and len(manifest_lines(root)) == 2
    with DatasetStore(root) as store:
        assert store.counts() == {"cup": 1, "pen": 1}
        assert len(store.repair_report.temp_removed) == 1
    assert_consistent(root)


def test_killed_mid_manifest_append_adopts_the_image(tmp_path):
    root = tmp_path / "ds"
    body = """
real_write = os.write
def half_write(fd, data):
    real_write(fd, bytes(data)[: len(data) // 2])
    os._exit(9)
os.write = half_write                      # die halfway through the third manifest line
store.add(frame(3), "cup")
"""
    die_in_child(root, TWO_CAPTURES + body)
    assert not (root / MANIFEST_NAME).read_bytes().endswith(b"\n")
    with DatasetStore(root) as store:
        report = store.repair_report
        assert report.corrupt_lines == [3] and len(report.adopted) == 1
        assert store.counts() == {"cup": 2, "pen": 1}
    assert_consistent(root)


def test_killed_inside_a_batch_adopts_unlisted_images(tmp_path):
    root = tmp_path / "ds"
    die_in_child(
        root,
        """
store.add(frame(0), "cup")
with store.batch(sync_every=100):
    for i in range(1, 6):
        store.add(frame(i), "cup")
    os._exit(9)
""",
    )
    assert len(manifest_lines(root)) == 1 and len(image_files(root)) == 6
    with DatasetStore(root) as store:
        assert len(store.repair_report.adopted) == 5
        assert store.counts() == {"cup": 6}
    assert_consistent(root)


def test_sigkill_at_a_random_moment_keeps_the_store_consistent(tmp_path):
    root = tmp_path / "ds"
    code = (
        CHILD_PRELUDE
        + """
i = 0
while True:
    store.add(frame(i), ("cup", "pen", "mug")[i % 3])
    if i == 5:
        print("ready", flush=True)
    i += 1
"""
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(root)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # let it run into the middle of some write; any moment must be safe
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    n_before = len(manifest_lines(root))
    assert n_before >= 6
    with DatasetStore(root) as store:
        assert len(store) >= n_before
        assert not store.repair_report.dropped_missing
    assert_consistent(root)


# ----------------------------------------------------------------------------- write failures


def test_write_over_the_file_size_limit_fails_cleanly(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the write mid-file, as a full disk does (any user)."""
    root = tmp_path / "ds"
    code = """
import json, resource, signal, sys
import numpy as np
from dli_perception.core.dataset import DatasetStore
from dli_perception.errors import DatasetError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))
rng = np.random.default_rng(0)
small = lambda: (rng.integers(0, 256, (6, 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1))
out = {}
with DatasetStore(sys.argv[1]) as store:
    store.add(small(), "cup")
    try:
        store.add(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), "cup")  # ~90 kB of JPEG
    except DatasetError as err:
        out["error"] = str(err)
    store.add(small(), "pen")
    out["counts"] = store.counts()
print(json.dumps(out))
"""
    proc = run_child(code, str(root))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "file size limit" in out["error"] and "nothing was written" in out["error"]
    assert out["counts"] == {"cup": 1, "pen": 1}
    with DatasetStore(root) as store:
        assert store.repair_report.clean, store.repair_report.summary()
        assert store.counts() == {"cup": 1, "pen": 1}
    assert_consistent(root)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_switch(tmp_path):
    """(root, make_readonly, make_writable): chmod for a normal user, a tmpfs remount for root."""
    if os.geteuid() != 0:
        root = tmp_path / "ds"
        root.mkdir()

        def set_mode(mode: int) -> None:
            for p in [root, *[d for d in root.iterdir() if d.is_dir()]]:
                p.chmod(mode)

        yield root, lambda: set_mode(0o555), lambda: set_mode(0o755)
        set_mode(0o755)
        return
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "4m"):
        pytest.skip("running as root (chmod does not stop root) and mounting a tmpfs is not permitted")

    def remount(opt: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{opt}", str(mnt)], check=True, capture_output=True)

    try:
        yield mnt / "ds", lambda: remount("ro"), lambda: remount("rw")
    finally:
        _umount(mnt)


def test_read_only_directory_fails_cleanly(readonly_switch):
    root, make_readonly, make_writable = readonly_switch
    with DatasetStore(root) as store:
        first = [store.add(frame(i), "cup") for i in range(2)]
    before = (root / MANIFEST_NAME).read_bytes()
    make_readonly()
    try:
        with DatasetStore(root) as store:
            assert store.counts() == {"cup": 2}
            for label in ("cup", "new_class"):
                with pytest.raises(DatasetError, match="read-only"):
                    store.add(frame(5), label)
            with pytest.raises(DatasetError, match="read-only"):
                store.undo(1)
            assert store.counts() == {"cup": 2}
    finally:
        make_writable()
    assert (root / MANIFEST_NAME).read_bytes() == before
    assert all(r.path.exists() for r in first)
    assert not (root / "new_class").exists()
    assert_consistent(root)


def test_disk_full_fails_cleanly(tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "160k"):
        pytest.skip("needs root and permission to mount a 160 kB tmpfs; the file size limit test covers EFBIG")
    try:
        root = mnt / "ds"
        saved = 0
        with DatasetStore(root) as store:
            with pytest.raises(DatasetError, match="disk is full") as info:
                for i in range(500):
                    store.add(noise(i), ("cup", "pen")[i % 2])
                    saved += 1
            assert "earlier images are intact" in str(info.value) or "not saved" in str(info.value)
            assert len(store) == saved > 3
        with DatasetStore(root, readonly=True) as store:
            assert store.repair_report.clean, store.repair_report.summary()
            assert len(store) == saved
        assert_consistent(root)
    finally:
        _umount(mnt)


# ----------------------------------------------------------------------------- import


def test_import_folder_skips_corrupt_files_and_bad_names(tmp_path):
    import cv2
    from PIL import Image

    src = tmp_path / "src"
    for d in ("cup", "pen", "none", ".hidden"):
        (src / d).mkdir(parents=True)
    jpgs = []
    for i in range(3):
        path = src / "cup" / f"img{i}.jpeg"
        path.write_bytes(cv2.imencode(".jpg", frame(i))[1].tobytes())
        jpgs.append(path)
    good = jpgs[2].read_bytes()
    jpgs[2].write_bytes(good[: len(good) * 2 // 3])  # truncated: Pillow refuses it
    (src / "cup" / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "cup" / "notes.txt").write_text("not an image")
    for i in range(2):
        cv2.imwrite(str(src / "pen" / f"p{i}.png"), cv2.cvtColor(frame(10 + i), cv2.COLOR_RGB2BGR))
    Image.fromarray(frame(12)).save(src / "pen" / "p2.bmp")
    cv2.imwrite(str(src / "pen" / "p3.png"), frame(15)[:, :, ::-1].astype(np.uint16) * 257)  # 16-bit
    cv2.imwrite(str(src / "none" / "x.png"), frame(13))
    cv2.imwrite(str(src / ".hidden" / "x.png"), frame(14))

    root = tmp_path / "ds"
    seen = []
    with DatasetStore(root) as store:
        store.add(frame(50), "cup")
        stats = import_folder(store, src, progress=lambda done, total: seen.append((done, total)))
        assert stats.counts == {"cup": 2, "pen": 4}
        assert stats.skipped_corrupt == 2 and stats.skipped_bad_label == 1
        assert sorted(Path(p).name for p in stats.corrupt_files) == ["garbage.jpg", "img2.jpeg"]
        assert stats.bad_labels == ["none"]
        assert seen[-1] == (8, 8)
        assert store.counts() == {"cup": 3, "pen": 4}
        by_source = {e.source: e for e in store.entries}
        copied = by_source["import:src/cup/img0.jpeg"]
        assert copied.file.endswith(".jpg") and copied.sha256 == fsutil.sha256_file(jpgs[0])
        bmp = by_source["import:src/pen/p2.bmp"]
        assert bmp.file.endswith(".jpg")
        assert np.abs(read_rgb(store.path_of(bmp)).astype(int) - frame(12)).mean() < 3
        png = by_source["import:src/pen/p0.png"]
        np.testing.assert_array_equal(read_rgb(store.path_of(png)), frame(10))
        deep = by_source["import:src/pen/p3.png"]  # 16-bit PNG: re-encoded at 8 bits
        assert deep.file.endswith(".jpg")
        assert np.abs(read_rgb(store.path_of(deep)).astype(int) - frame(15)).mean() < 3
        again = import_folder(store, src)
        assert again.duplicates == 6 and again.counts == {}
        with pytest.raises(DatasetError, match="into itself"):
            import_folder(store, root)
        with pytest.raises(DatasetError, match="not a directory"):
            import_folder(store, tmp_path / "missing")
    assert_consistent(root)


def test_import_folder_can_be_stopped(tmp_path):
    import cv2

    src = tmp_path / "src" / "cup"
    src.mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(src / f"{i}.png"), frame(i))
    stop = threading.Event()
    with DatasetStore(tmp_path / "ds") as store:
        stats = import_folder(
            store, tmp_path / "src", progress=lambda done, total: stop.set() if done == 2 else None, stop_event=stop
        )
        assert stats.cancelled and stats.counts == {"cup": 2} and store.counts() == {"cup": 2}
    assert_consistent(tmp_path / "ds")
