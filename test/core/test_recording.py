"""The recorder without ROS: a real DatasetStore, a real writer thread, rosbags Image messages.

Capture and undo calls are coroutines; these tests drive them the way an executor does (step on
every wake), several at once, and time each answer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from storeutil import slow_store

from dli_perception.core.contracts import Counts
from dli_perception.core.dataset import DatasetStore
from dli_perception.core.imaging.bagmessages import to_rosbags_image
from dli_perception.core.recording import Recorder
from dli_perception.core.recording_jobs import (
    BUSY,
    CLASS_FULL,
    INVALID_LABEL,
    NO_FRAME,
    NO_LABEL,
    NOTHING_TO_UNDO,
    SHUTTING_DOWN,
    STALE_FRAME,
    RecorderHooks,
)

STEP_S = 0.005  # how often the test "executor" resumes waiting calls


def _frame(i: int):
    """A distinct 32x24 rgb8 frame (no two equal, so dedupe never refuses one)."""
    rgb = np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return to_rosbags_image(rgb, "rgb8")


def _drive(coros: list, timeout_s: float = 10.0) -> list[tuple[object, float]]:
    """Run coroutines together, one step each per wake; each one's result and when it came (monotonic)."""
    results: dict[int, tuple[object, float]] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < len(coros):
        assert time.monotonic() < deadline, f"{len(coros) - len(results)} calls never answered"
        for i, coro in enumerate(coros):
            if i in results:
                continue
            try:
                coro.send(None)
            except StopIteration as stop:
                results[i] = (stop.value, time.monotonic())
        time.sleep(STEP_S)
    return [results[i] for i in range(len(coros))]


def _answer(coro):
    return _drive([coro])[0][0]


class _Host:
    """What the node would do with the hooks: keep the counts, the log and the tick period."""

    def __init__(self) -> None:
        self.counts: list[Counts] = []
        self.lines: list[tuple[str, str]] = []
        self.periods: list[float | None] = []
        self.hooks = RecorderHooks(
            counts=self.counts.append,
            pace=self.periods.append,
            log=lambda level, text: self.lines.append((level, text)),
        )


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(**options):
        store_options = {k: options.pop(k) for k in ("max_per_class", "image_format") if k in options}
        host = _Host()
        rec = Recorder(DatasetStore(tmp_path / "ds", **store_options), hooks=host.hooks, **options)
        rec.start()
        made.append(rec)
        return rec, host

    yield make
    for rec in made:
        rec.close(drain_timeout_s=2.0)


def _files(root: Path) -> Counter:
    return Counter(p.parent.name for p in root.rglob("*") if p.suffix in (".jpg", ".png"))


def test_refusals_say_why_and_are_counted(rig):
    rec, host = rig(max_per_class=1, max_frame_age_s=0.2)
    assert _answer(rec.capture()).reason == NO_LABEL
    assert rec.set_label("../x") and _answer(rec.capture()).reason == INVALID_LABEL
    level, text = host.lines[-1]
    assert level == "warning" and text.startswith("teach label '../x' cannot be a class name:"), text
    assert rec.set_label("cup") and not rec.set_label(" cup ")  # the same label: no change
    assert _answer(rec.capture()).reason == NO_FRAME
    rec.offer_frame(_frame(1), 0)
    assert _answer(rec.capture()).success
    rec.offer_frame(_frame(2), 0)
    full = _answer(rec.capture())
    assert full.reason == CLASS_FULL and "nothing was saved" in full.message
    time.sleep(0.25)
    stale = _answer(rec.capture())
    assert stale.reason == STALE_FRAME and "max_frame_age_s=0.2" in stale.message
    assert rec.set_label("none") and rec.label is None
    assert rec.refused == Counter(no_label=1, invalid_label=1, no_frame=1, class_full=1, stale_frame=1)
    assert _files(rec.store.root) == Counter(cup=1) and rec.saved == 1


def test_counts_cache_follows_saves_and_undos_without_touching_the_store(rig):
    rec, host = rig()
    assert host.counts == [Counts({})]
    rec.set_label("cup")
    for i in range(3):
        rec.offer_frame(_frame(i), 1_000 + i)
        assert _answer(rec.capture()).success
    rec.set_label("mug")
    rec.offer_frame(_frame(10), 0)
    saved = _answer(rec.capture())
    assert saved.message.startswith(f"saved {saved.path} as 'mug' (1 in class, 4 in total)")
    assert host.counts[-1] == Counts({"cup": 3, "mug": 1}) == rec.counts()
    with rec.store._lock:  # a write holding the store delays none of these
        started = time.monotonic()
        assert rec.cached_count("cup") == 3 and rec.cached_count("_total") == 4
        level, summary, values = rec.status()
        assert time.monotonic() - started < 0.5
    assert (level, summary, values["images"], values["classes"], values["saved"]) == ("ok", "idle", 4, 2, 4)


def test_undo_removes_the_last_capture_until_nothing_is_left(rig):
    rec, host = rig()
    rec.set_label("cup")
    paths = []
    for i in range(2):
        rec.offer_frame(_frame(i), 0)
        paths.append(Path(_answer(rec.capture()).path))
    undone = _answer(rec.undo())
    assert undone.success and undone.path == str(paths[1]) and not paths[1].exists() and paths[0].exists()
    assert "'cup' now has 1, 1 in total" in undone.message
    assert host.counts[-1] == Counts({"cup": 1}) and rec.undone == 1
    assert _answer(rec.undo()).success
    empty = _answer(rec.undo())
    assert empty.reason == NOTHING_TO_UNDO and not empty.success
    assert host.counts[-1] == Counts({}) and _files(rec.store.root) == Counter()
    assert rec.refused == Counter(nothing_to_undo=1)


def test_a_slow_store_gets_every_call_answered_within_write_timeout_queued_or_busy(rig):
    timeout_s, write_s, calls = 0.5, 0.2, 12
    rec, host = rig(write_timeout_s=timeout_s, max_frame_age_s=60.0)
    slow_store(rec.store, write_s)
    rec.set_label("cup")
    saved, busy = [], []
    for round_ in range(2):  # the first round finds the pace unknown; the second knows it and refuses at once
        coros, sent = [], []
        for i in range(calls):  # all at once: each sees the newest frame when it is checked
            rec.offer_frame(_frame(100 * round_ + i), 0)
            coro = rec.capture()
            sent.append(time.monotonic())
            try:
                coro.send(None)  # checked and queued (or refused) now, as the executor does on arrival
                coros.append(coro)
            except StopIteration as stop:  # refused at once
                coros.append(_done(stop.value))
        answers = _drive(coros)
        late = [round(at - sent[i], 3) for i, (_, at) in enumerate(answers) if at - sent[i] > timeout_s + 0.1]
        assert not late, f"answered later than write_timeout_s={timeout_s}: {late}"
        outcomes = [outcome for outcome, _ in answers]
        saved += [o for o in outcomes if o.success]
        busy += [o for o in outcomes if o.reason == BUSY]
        assert len(saved) + len(busy) == calls * (round_ + 1), [o.message for o in outcomes]
        assert _wait(lambda: rec.pending_jobs == 0)
    assert saved and busy
    assert all("write_timeout_s=0.5" in o.message for o in busy)
    assert any("jobs ahead" in o.message for o in busy)  # refused at once, nothing done
    assert any("did not get to it" in o.message for o in busy)  # queued, cancelled at its deadline
    assert rec.refused[BUSY] == len(busy) and rec.last_error
    # what was answered saved is there; a busy "may still complete" one may have been saved as well
    assert all(Path(o.path).is_file() for o in saved)
    assert len(saved) <= _files(rec.store.root)["cup"] == host.counts[-1].total == rec.saved


async def _done_value(value):
    return value


def _done(value):
    return _done_value(value)


def test_continuous_recording_queues_each_new_frame_once_and_drops_when_the_writer_lags(rig):
    rec, host = rig(capture_rate_hz=4.0, queue_size=1, max_frame_age_s=60.0)
    rec.set_label("cup")
    rec.offer_frame(_frame(0), 0)
    started = rec.set_recording(True)
    assert started.success and started.message == "recording at 4 Hz under 'cup'" and host.periods == [0.25]
    rec.tick()
    rec.tick()  # no new frame: nothing more is queued
    assert _wait(lambda: rec.pending_jobs == 0) and rec.saved == 1
    rec.configure(capture_rate_hz=10.0)
    assert host.periods[-1] == pytest.approx(0.1)
    slow_store(rec.store, 0.3)
    for i in range(1, 5):
        rec.offer_frame(_frame(i), 0)
        rec.tick()
    assert rec.dropped >= 2 and any("frames are dropped" in text for _, text in host.lines)
    stopped = rec.set_recording(False)
    assert stopped.success and host.periods[-1] is None
    rec.offer_frame(_frame(9), 0)
    rec.tick()  # stopped: nothing is queued
    assert _wait(lambda: rec.pending_jobs == 0)
    assert rec.saved + rec.dropped == 5 and _files(rec.store.root)["cup"] == rec.saved


def _wait(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_close_writes_what_was_queued_and_refuses_afterwards(tmp_path):
    host = _Host()
    rec = Recorder(DatasetStore(tmp_path / "ds"), hooks=host.hooks, capture_rate_hz=5.0, max_frame_age_s=60.0)
    rec.start()
    slow_store(rec.store, 0.1)
    rec.set_label("cup")
    rec.set_recording(True)
    for i in range(3):
        rec.offer_frame(_frame(i), 0)
        rec.tick()
    assert rec.close(drain_timeout_s=2.0)
    assert host.periods[-1] is None and host.counts[-1] == Counts({"cup": 3})
    assert host.lines[-1] == (
        "info",
        f"dataset {rec.store.root} closed: 3 images; this run saved 3, undid 0, refused 0, dropped 0",
    )
    assert _answer(rec.capture()).reason == SHUTTING_DOWN and _answer(rec.undo()).reason == SHUTTING_DOWN
    assert not rec.set_recording(True).success
    assert _files(tmp_path / "ds") == Counter(cup=3)
    reopened = DatasetStore(tmp_path / "ds")
    assert reopened.counts() == {"cup": 3}
    reopened.close()


def test_a_call_whose_writer_finished_wakes_its_host(rig):
    woken = threading.Event()
    rec, host = rig()
    rec.hooks.replied = woken.set
    rec.set_label("cup")
    rec.offer_frame(_frame(0), 0)
    assert _answer(rec.capture()).success and woken.is_set()
