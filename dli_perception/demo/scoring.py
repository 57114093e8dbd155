"""How the demo scores its run against the scene schedule: the dataset, the live stream, the drive.

Each check compares what a node produced with the class the synthetic camera showed at the
source frame's stamp (:class:`~dli_perception.demo.schedule.SceneSchedule`), leaving out moments
too close to a scene change to tell.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dli_perception.core.contracts import ReactionState, Scores
from dli_perception.demo.config import LIVE_GUARD_S
from dli_perception.demo.robot import Motion, SimulatedRobot
from dli_perception.demo.schedule import SceneSchedule
from dli_perception.demo.story import pct

SCENE_CHANGE = "(scene change)"
"""Motion bucket for the moments whose scene is uncertain (within the schedule's uncertainty of a change)."""


def check_dataset(dataset_dir: Path, schedule: SceneSchedule) -> tuple[dict[str, Any], list[str]]:
    """Every saved image's stamp against the schedule: its label must be the class that was on screen.

    Returns the summary fields (counts, images, verified, mislabelled, unverifiable) and the files that
    are mislabelled or cannot be verified.
    """
    from dli_perception.core.dataset import DatasetStore

    with DatasetStore(dataset_dir, readonly=True) as store:
        entries = store.entries
        counts = store.counts()
    wrong = [e.file for e in entries if schedule.class_at(e.stamp_ns) not in (None, e.label)]
    unsure = [e.file for e in entries if schedule.class_at(e.stamp_ns) is None]
    info = dict(counts=counts, images=len(entries), verified=len(entries) - len(wrong) - len(unsure))
    info.update(mislabelled=wrong, unverifiable=unsure)
    return info, wrong + unsure


@dataclass
class LiveScore:
    """Classifier results scored against the scene on screen when their frame was taken."""

    schedule: SceneSchedule
    frames: int = 0
    scored: int = 0
    skipped: int = 0
    correct: int = 0
    label_correct: int = 0
    per_class: dict[str, Counter] = field(default_factory=dict)
    scenes: dict[int, Counter] = field(default_factory=dict)
    inference_ms: list[float] = field(default_factory=list)
    printed: set[int] = field(default_factory=set)

    def add(self, s: Scores) -> None:
        """Score one result: ``raw_label`` per frame, ``label`` (smoothed) alongside."""
        self.frames += 1
        truth = self.schedule.class_at(s.stamp_ns, LIVE_GUARD_S)
        if truth is None:
            self.skipped += 1
            return
        self.scored += 1
        raw_ok = s.raw_label == truth
        label_ok = s.label == truth
        self.correct += raw_ok
        self.label_correct += label_ok
        per = self.per_class.setdefault(truth, Counter())
        per["frames"] += 1
        per["correct"] += raw_ok
        scene = self.scenes.setdefault(self.schedule.scene_index(s.stamp_ns, LIVE_GUARD_S), Counter())
        scene["frames"] += 1
        scene["correct"] += raw_ok
        scene["label_correct"] += label_ok
        scene[f"said:{s.label}"] += 1
        if s.inference_ms is not None:
            self.inference_ms.append(float(s.inference_ms))

    def finished_scenes(self, final: bool) -> list[str]:
        """One line per scene not told yet that is over (every one when ``final``)."""
        current = self.schedule.slot(time.time_ns(), self.schedule.opened_after_ns)
        lines = []
        for index in sorted(self.scenes):
            if index in self.printed or (not final and index >= current):
                continue
            self.printed.add(index)
            c = self.scenes[index]
            cls = self.schedule.classes[index % len(self.schedule.classes)]
            said = ", ".join(f"{k[5:]} {v}" for k, v in c.most_common() if k.startswith("said:"))
            lines.append(
                f"      scene {cls:<10} {c['correct']:>3}/{c['frames']:<3} frames right; labels published: {said}"
            )
        return lines

    def summary(self, seconds: float) -> dict[str, Any]:
        """The ``live`` section of ``summary.json``."""
        acc = self.correct / self.scored if self.scored else None
        label_acc = self.label_correct / self.scored if self.scored else None
        median = sorted(self.inference_ms)[len(self.inference_ms) // 2] if self.inference_ms else None
        return {
            "seconds": seconds,
            "frames": self.frames,
            "scored": self.scored,
            "skipped_near_scene_changes": self.skipped,
            "accuracy": acc,
            "label_accuracy": label_acc,
            "chance": 1.0 / len(self.schedule.classes),
            "per_class": {
                k: {"frames": v["frames"], "correct": v["correct"], "accuracy": v["correct"] / v["frames"]}
                for k, v in sorted(self.per_class.items())
            },
            "inference_ms_median": median,
        }

    def line(self) -> str:
        """The story line of the measurement so far."""
        live = self.summary(0.0)
        median = live["inference_ms_median"]
        return (
            f"      live accuracy {pct(live['accuracy'])} per frame ({self.correct} of {self.scored} frames; "
            f"{self.skipped} within {LIVE_GUARD_S:g} s of a scene change left out; chance {pct(live['chance'])}), "
            f"smoothed label {pct(live['label_accuracy'])}"
            + (f"; inference {median:.1f} ms per frame" if median is not None else "")
        )


class DriveLog:
    """While driving: ``cmd_vel`` moves the simulated robot, motion is summed per scene, transitions kept.

    Its ``on_*`` methods run on the graph client's thread; everything else on the demo's.
    """

    def __init__(self, robot: SimulatedRobot) -> None:
        self.robot = robot
        self.schedule: SceneSchedule | None = None
        self.motion: dict[str, Motion] = {}
        self.transitions: list[dict[str, Any]] = []
        self.driving = False
        self.t0 = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self.t0 = time.monotonic()
            self.driving = True
        self.robot.advance(time.time_ns() / 1e9)

    def stop(self) -> None:
        with self._lock:
            self.driving = False

    def on_velocity(self, linear_x: float, angular_z: float) -> None:
        now_ns = time.time_ns()
        seconds, distance, rotation = self.robot.command(linear_x, angular_z, now_ns / 1e9)
        schedule = self.schedule
        # The motion since the previous command happened while this scene was on screen (None: a change).
        cls = schedule.class_between(now_ns - round(seconds * 1e9), now_ns) if schedule else None
        with self._lock:
            if not self.driving:
                return
            motion = self.motion.setdefault(cls or SCENE_CHANGE, Motion())
            motion.seconds += seconds
            motion.distance_m += distance
            motion.rotation_rad += rotation
            motion.commands += 1

    def on_state(self, state: ReactionState) -> None:
        with self._lock:
            if not self.driving:
                return
            entry = asdict(state)
            entry["t_s"] = round(time.monotonic() - self.t0, 2)
            entry["pose"] = [round(v, 4) for v in self.robot.pose()]
            self.transitions.append(entry)

    def new_transitions(self, shown: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.transitions[shown:]

    def summary(self, seconds: float) -> dict[str, Any]:
        """The ``drive`` section of ``summary.json``."""
        with self._lock:
            motion = {k: v.to_dict() for k, v in sorted(self.motion.items())}
            transitions = list(self.transitions)
        pose = self.robot.pose()
        return {
            "seconds": seconds,
            "commands": self.robot.commands,
            "final_pose": {"x_m": pose[0], "y_m": pose[1], "theta_rad": pose[2]},
            "per_class": motion,
            "transitions": transitions,
        }
