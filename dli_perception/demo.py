"""The main demo: see → label → learn → classify → react, in one process, no camera, robot or download.

:class:`Demo` starts the package's real nodes in one rclpy context and one executor and walks
through the DLI workflow with them:

1. ``camera_node`` (synthetic source) shows scenes of a few classes in turn, ``scene_period_s``
   seconds each;
2. ``recorder_node`` collects ``per_class`` images per class: the demo publishes ``teach_label``
   for the scene on screen and calls ``~/capture`` only well inside a scene (see
   :class:`SceneSchedule`); afterwards every saved image's stamp is checked against the schedule;
3. ``trainer_node`` fine-tunes ResNet-18 (head mode) on the dataset and exports the model
   directory, then announces it on ``model_updated``;
4. ``classifier_node`` loads it and classifies the live stream; the demo compares each
   result (``~/scores``: label and the source frame's stamp) with the class that was on screen;
5. ``reaction_node``, once enabled, turns the labels into ``cmd_vel``, which drives a
   :class:`SimulatedRobot` (a kinematic unicycle).

How the demo knows what is on screen, honestly: the synthetic source shows
``classes[floor(t / scene_period) % n]`` at ``t`` seconds after it was opened, which happens in
the camera node's constructor. The demo reads the wall clock just before and just after that
constructor, so the opening time is known to within that interval, and it never uses a frame
(or captures) unless the whole uncertainty, widened by a guard, falls inside one scene.

Nodes live in the namespace ``config.namespace`` (``/dli_demo``), so nothing drives a real
robot listening on ``/cmd_vel``, and discovery is kept on this host unless the user chose
otherwise (``ROS_AUTOMATIC_DISCOVERY_RANGE``). Node log messages go to ``demo.log`` (through
``/rosout``), errors also to the console. Everything is stoppable: :meth:`Demo.stop` (the
command calls it on Ctrl-C) ends the current stage, the nodes are destroyed (the reaction node
sends its final zero Twist) and ``summary.json`` records how far the run got.

This module never prints: the command (``dli_perception.commands.demo``) supplies a
:class:`DemoOutput`. rclpy is imported only when a demo runs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dli_perception.core.synthetic import DEFAULT_CLASSES, MAX_CLASSES
from dli_perception.errors import ConfigError, DemoError, DliPerceptionError, InvalidLabelError

logger = logging.getLogger(__name__)

MARKER_FILE = ".dli_demo"
"""Marks a directory as a demo output, which a later run may replace."""
DATASET_DIR = "dataset"
MODEL_DIR = "model"
LOG_FILE = "demo.log"
SUMMARY_FILE = "summary.json"
ACTIONS_FILE = "actions.yaml"
OUTPUTS = (DATASET_DIR, MODEL_DIR, f"{MODEL_DIR}.checkpoints", LOG_FILE, SUMMARY_FILE, ACTIONS_FILE)
"""What a demo run writes into its output directory (and what a later run replaces)."""

STAGES = ("camera", "collect", "train", "classify", "drive")
SCENE_CHANGE = "(scene change)"
"""Motion bucket for the moments whose scene is uncertain (within the schedule's uncertainty of a change)."""

TRANSPORT_SLACK_S = 0.05
"""Most a frame may take from its stamp to reaching a node in this process (s), with margin."""
CAPTURE_LOOKAHEAD_S = 0.25
"""A capture is started only when the scene stays the same at least this long (s)."""
LABEL_SETTLE_S = 0.2
"""Wait after a new teach_label before the first capture with it (topic and service are separate channels)."""
SCENE_GUARD_S = 0.05
"""Extra margin around scene changes for captures and the dataset check (s)."""
LIVE_GUARD_S = 0.3
"""Frames this close to a scene change (s) are left out of the live accuracy: the smoothed label needs
a few frames to follow a change."""
FIRST_FRAME_TIMEOUT_S = 20.0
SERVICE_TIMEOUT_S = 20.0
MODEL_LOAD_TIMEOUT_S = 120.0
TRAINING_END_TIMEOUT_S = 120.0
"""Longest the demo waits, after Ctrl-C, for a training run to stop (an ONNX export cannot be interrupted)."""


# --------------------------------------------------------------------------- configuration


@dataclass
class DemoConfig:
    """Everything a demo run does; :meth:`quick` gives the small settings used by tests.

    Sizes are pixels, times seconds, rates Hz. ``weights`` is ``"imagenet"``, ``"none"`` or
    the path of a ``.pth`` file (see :func:`resolve_weights` for ``None``). ``live_cycles`` and
    ``drive_cycles`` are how many times every scene is shown while measuring the live accuracy
    and while driving. ``torch_threads`` is 1 by default: the demo's batches are small, and on a
    few busy cores more threads spin against the camera and classifier (measured 5x slower with 2).
    """

    classes: tuple[str, ...] = DEFAULT_CLASSES
    per_class: int = 40
    out: Path = Path("dli_demo")
    weights: str | None = None
    width: int = 320
    height: int = 240
    fps: float = 15.0
    scene_period_s: float = 3.0
    image_size: int = 224
    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 16
    capture_hz: float = 8.0
    live_cycles: int = 2
    drive_cycles: int = 1
    seed: int = 0
    namespace: str = "dli_demo"
    torch_threads: int = 1
    verbose: bool = False

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """Small sizes for tests and a first look: 16 images per class at 96 px, 2 s scenes.

        From random weights, 64 px models picked an under-fitted early epoch on 2 of 6 runs (6 validation
        images cannot tell them apart); at 96 px and lr 0.01 every measured run classified live frames well.
        """
        values: dict[str, Any] = dict(
            per_class=16,
            width=160,
            height=120,
            fps=10.0,
            scene_period_s=2.0,
            image_size=96,
            epochs=100,
            lr=0.01,
            live_cycles=2,
            drive_cycles=1,
        )
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        classes = self.classes
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        self.classes = tuple(classes)
        if not 2 <= len(self.classes) <= MAX_CLASSES:
            raise ConfigError(
                f"the demo needs 2 to {MAX_CLASSES} classes (a classifier tells at least two apart), "
                f"got {list(self.classes)}"
            )
        from dli_perception.core.dataset import validate_label

        for name in self.classes:
            try:
                validate_label(name)
            except InvalidLabelError as exc:
                raise ConfigError(f"--classes: {exc}") from None
            if name.lower() in ("unknown", "none"):
                raise ConfigError(f"class name {name!r} is reserved for 'nothing recognised'; choose another")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"class names must be unique, got {list(self.classes)}")
        self.out = Path(self.out).expanduser()
        checks = {
            "per_class": (
                self.per_class >= 5,
                "must be >= 5 (a validation split needs a few images per class)",
            ),
            "width": (16 <= self.width <= 4096, "must be 16..4096 pixels"),
            "height": (16 <= self.height <= 4096, "must be 16..4096 pixels"),
            "fps": (1.0 <= self.fps <= 60.0, "must be 1..60 Hz"),
            "scene_period_s": (1.0 <= self.scene_period_s <= 600.0, "must be 1..600 s"),
            "image_size": (32 <= self.image_size <= 1024, "must be 32..1024 pixels"),
            "epochs": (1 <= self.epochs <= 100_000, "must be >= 1"),
            "lr": (0 < self.lr <= 10, "must be in (0, 10]"),
            "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "capture_hz": (0.1 <= self.capture_hz <= 60.0, "must be 0.1..60 Hz"),
            "live_cycles": (self.live_cycles >= 1, "must be >= 1"),
            "drive_cycles": (self.drive_cycles >= 1, "must be >= 1"),
            "seed": (self.seed >= 0, "must be >= 0"),
            "torch_threads": (self.torch_threads >= 0, "must be >= 0 (0: torch's default)"),
        }
        for name, (ok, why) in checks.items():
            if not ok:
                raise ConfigError(f"demo option {name}={getattr(self, name)!r} {why}")
        usable = self.scene_period_s - self.capture_margin_s * 2
        if usable < 0.3:
            raise ConfigError(
                f"scene_period_s={self.scene_period_s:g} s leaves {usable:.2f} s per scene for captures at "
                f"{self.fps:g} fps; show scenes longer or raise fps"
            )

    @property
    def max_frame_age_s(self) -> float:
        """The recorder's ``max_frame_age_s``: two and a half frame periods (a newer frame is always due)."""
        return max(0.1, 2.5 / self.fps)

    @property
    def capture_margin_s(self) -> float:
        """Time kept free of captures around each scene change, each side (s)."""
        return self.max_frame_age_s + TRANSPORT_SLACK_S + SCENE_GUARD_S + CAPTURE_LOOKAHEAD_S / 2

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        d["classes"] = list(self.classes)
        return d


def resolve_weights(requested: str | None, backbone: str = "resnet18") -> tuple[str, str]:
    """The weights to train with and a note for the user (empty when there is nothing to say).

    ``None`` means "ImageNet if cached, else random": the demo never downloads, and says so when it
    falls back. An explicit ``"imagenet"`` that is not cached, or a missing file, raises
    :class:`~dli_perception.errors.WeightsNotFoundError` (with where to put the file).
    """
    from dli_perception.core.training import build_model, imagenet_weights_path

    if requested is None:
        cached = imagenet_weights_path(backbone)
        if cached.is_file():
            return "imagenet", ""
        return "none", (
            f"the ImageNet weights of {backbone} are not in the torch hub cache ({cached}) and the demo "
            "downloads nothing, so it trains from random weights (weights: none). Expect lower accuracy "
            "than with pretrained weights: these synthetic scenes are simple enough to learn anyway, real "
            f"camera images need the pretrained backbone (copy {cached.name} there, or pass --weights PATH)"
        )
    text = str(requested).strip()
    if text.lower() == "none":
        return "none", "training from random weights (--weights none): accuracy will be lower than pretrained"
    if text.lower() == "imagenet" and imagenet_weights_path(backbone).is_file():
        return "imagenet", ""
    if text.lower() != "imagenet" and Path(text).expanduser().is_file():
        return str(Path(text).expanduser().resolve()), ""
    build_model(backbone, num_classes=2, weights=text)  # raises WeightsNotFoundError saying what to do
    return text, ""  # pragma: no cover - build_model raised


def action_table_for(classes: Sequence[str]) -> dict[str, Any] | None:
    """The reaction table for ``classes``: ``None`` for free/blocked (the node's built-in table).

    Other classes get a table of their own: the first drives forward, the second turns left,
    the third turns right, any others stop.
    """
    if tuple(classes) == DEFAULT_CLASSES:
        return None
    moves = [{"linear_x": 0.15, "angular_z": 0.0}, {"linear_x": 0.0, "angular_z": 1.0}]
    moves.append({"linear_x": 0.0, "angular_z": -1.0})
    actions = {name: moves[i] if i < len(moves) else "stop" for i, name in enumerate(classes)}
    return {
        "description": "dli-perception demo: first class forward, second left, third right, others stop.",
        "actions": actions,
        "default": "stop",
        "unknown_label": "unknown",
    }


def prepare_out_dir(out: Path) -> bool:
    """Create ``out`` for a run; returns True when a previous demo run there was replaced.

    Only the demo's own outputs (:data:`OUTPUTS`) of a directory marked by an earlier run are
    removed. Raises :class:`ConfigError` for a file, or a non-empty directory that is no demo output.
    """
    out = out.expanduser()
    replaced = False
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out} is a file; choose a directory")
        if any(out.iterdir()):
            if not (out / MARKER_FILE).is_file():
                raise ConfigError(
                    f"--out {out} is not empty and holds no earlier demo run; choose a new or empty "
                    "directory "
                    "(the demo replaces only its own outputs)"
                )
            for name in OUTPUTS:
                path = out / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
            replaced = True
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER_FILE).write_text("output of dli-perception demo; a later run replaces it\n")
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return replaced


# --------------------------------------------------------------------------- what is on screen


@dataclass(frozen=True)
class SceneSchedule:
    """Which class the synthetic camera shows when.

    ``classes`` cycle, ``period_s`` seconds each, from the moment the source was opened, which
    is only known to lie between ``opened_after_ns`` and ``opened_before_ns`` (wall clock,
    ``time.time_ns``, the clock of the frames' stamps). Every answer accounts for that
    uncertainty: a time is given a class only when it is the same for every possible opening time.
    """

    classes: tuple[str, ...]
    period_s: float
    opened_after_ns: int
    opened_before_ns: int

    def __post_init__(self) -> None:
        if not self.period_s > 0 or self.opened_before_ns < self.opened_after_ns or len(self.classes) < 1:
            raise ConfigError(
                "SceneSchedule needs classes, period_s > 0 and opened_after_ns <= opened_before_ns"
            )

    @property
    def uncertainty_s(self) -> float:
        """Width of the window in which the camera opened (s)."""
        return (self.opened_before_ns - self.opened_after_ns) / 1e9

    def narrowed(self, frame_stamp_ns: int) -> SceneSchedule:
        """This schedule, knowing a frame stamped ``frame_stamp_ns`` exists (the source opened before it)."""
        before = min(self.opened_before_ns, max(int(frame_stamp_ns), self.opened_after_ns))
        return dataclasses.replace(self, opened_before_ns=before)

    def slot(self, t_ns: int, opened_ns: int) -> int:
        """Index of the scene shown at ``t_ns`` if the source opened at ``opened_ns`` (may be negative)."""
        return math.floor((t_ns - opened_ns) / 1e9 / self.period_s + 1e-9)

    def class_between(self, first_ns: int, last_ns: int, guard_s: float = 0.0) -> str | None:
        """The class shown during all of ``[first_ns - guard, last_ns + guard]``, or None when a scene may
        change (or the camera may not have been open yet) inside that interval."""
        guard_ns = round(guard_s * 1e9)
        earliest = self.slot(first_ns - guard_ns, self.opened_before_ns)
        latest = self.slot(last_ns + guard_ns, self.opened_after_ns)
        if earliest < 0 or earliest != latest:
            return None
        return self.classes[earliest % len(self.classes)]

    def class_at(self, stamp_ns: int, guard_s: float = 0.0) -> str | None:
        """The class shown in a frame stamped ``stamp_ns``; None within ``guard_s`` of a possible change."""
        return self.class_between(stamp_ns, stamp_ns, guard_s)

    def scene_index(self, stamp_ns: int, guard_s: float = 0.0) -> int | None:
        """The running number of the scene (0, 1, 2, ...) shown at ``stamp_ns``; None near a change."""
        if self.class_at(stamp_ns, guard_s) is None:
            return None
        return self.slot(stamp_ns, self.opened_after_ns)


# --------------------------------------------------------------------------- the simulated robot


@dataclass
class Motion:
    """Motion accumulated while one class was on screen: seconds, path length (m), rotation (rad)."""

    seconds: float = 0.0
    distance_m: float = 0.0
    rotation_rad: float = 0.0
    commands: int = 0

    def to_dict(self) -> dict[str, Any]:
        s = self.seconds
        return {
            "seconds": round(s, 3),
            "distance_m": round(self.distance_m, 4),
            "rotation_rad": round(self.rotation_rad, 4),
            "rotation_deg": round(math.degrees(self.rotation_rad), 2),
            "mean_speed_m_s": round(self.distance_m / s, 4) if s > 0 else 0.0,
            "mean_turn_rate_rad_s": round(self.rotation_rad / s, 4) if s > 0 else 0.0,
            "commands": self.commands,
        }


class SimulatedRobot:
    """A kinematic unicycle (a differential-drive robot seen from above) driven by ``cmd_vel``.

    The pose is ``x``, ``y`` (m) and ``theta`` (rad, counter-clockwise from +x). Each command
    (``linear.x`` m/s, ``angular.z`` rad/s) is held until the next one, but for at most
    ``timeout_s`` (like diff_drive_controller's ``cmd_vel_timeout``), after which the robot stops.
    Motion is integrated exactly along arcs. Thread-safe.
    """

    def __init__(self, timeout_s: float = 0.5) -> None:
        self.timeout_s = float(timeout_s)
        self.x = 0.0
        self.y = 0.0
        self.theta = 0.0
        self.linear = 0.0
        self.angular = 0.0
        self.commands = 0
        self._since: float | None = None  # time of the current command
        self._until: float | None = None  # time integrated up to
        self._lock = threading.Lock()

    def command(self, linear: float, angular: float, t: float) -> tuple[float, float, float]:
        """Apply a command received at ``t`` (s, any monotonic clock); returns the motion since the last call
        as ``(seconds, distance_m, rotation_rad)``."""
        with self._lock:
            moved = self._advance(t)
            self.linear, self.angular = float(linear), float(angular)
            self._since = t
            self.commands += 1
            return moved

    def advance(self, t: float) -> tuple[float, float, float]:
        """Integrate up to ``t`` without a new command; returns ``(seconds, distance_m, rotation_rad)``."""
        with self._lock:
            return self._advance(t)

    def _advance(self, t: float) -> tuple[float, float, float]:
        start = self._until
        self._until = t if start is None else max(start, t)
        if start is None or self._since is None or t <= start:
            return (0.0, 0.0, 0.0)
        end = min(t, self._since + self.timeout_s)  # a command is not held past the timeout
        dt = max(0.0, end - start)
        v, w = self.linear, self.angular
        if dt > 0 and (v or w):
            theta = self.theta
            if abs(w) < 1e-9:
                self.x += v * dt * math.cos(theta)
                self.y += v * dt * math.sin(theta)
            else:
                self.x += v / w * (math.sin(theta + w * dt) - math.sin(theta))
                self.y -= v / w * (math.cos(theta + w * dt) - math.cos(theta))
            self.theta = math.remainder(theta + w * dt, math.tau)
        return (t - start, abs(v) * dt, abs(w) * dt)

    def pose(self) -> tuple[float, float, float]:
        """``(x m, y m, theta rad)``."""
        with self._lock:
            return (self.x, self.y, self.theta)


def format_pose(pose: tuple[float, float, float]) -> str:
    x, y, theta = pose
    return f"x {x:+.2f} m, y {y:+.2f} m, heading {math.degrees(theta):+.0f} deg"


# --------------------------------------------------------------------------- output


class ProgressLike(Protocol):
    def update_to(self, done: int, total: int | None = None, **postfix: Any) -> None: ...

    def close(self) -> None: ...


class DemoOutput(Protocol):
    """Where the demo reports to (the command prints; tests may collect)."""

    def say(self, text: str) -> None:
        """One line (or block) of the story."""

    def progress(self, total: int | None, desc: str, unit: str = "it") -> ProgressLike:
        """A progress bar."""

    def training_progress(self) -> Callable[[Any], None]:
        """A callable taking :class:`~dli_perception.core.training.ProgressEvent`\\ s, with ``close()``."""


class Interrupted(Exception):
    """The demo was asked to stop (Ctrl-C); raised inside a stage, handled by :meth:`Demo.run`."""


def _poll(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Wait (not stoppable) until ``predicate()`` is true or ``timeout`` s passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _describe_action(action: Any) -> str:
    if not action.moves:
        return "stop"
    text = f"linear.x {action.linear_x:+.2f} m/s, angular.z {action.angular_z:+.2f} rad/s"
    return text + (f" for {action.duration_s:g} s" if action.duration_s is not None else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the demo


@dataclass
class _Live:
    """Classifier results while the live accuracy is measured."""

    frames: int = 0
    scored: int = 0
    skipped: int = 0
    correct: int = 0
    label_correct: int = 0
    per_class: dict[str, Counter] = field(default_factory=dict)
    scenes: dict[int, Counter] = field(default_factory=dict)
    inference_ms: list[float] = field(default_factory=list)


class Demo:
    """One run of the demo; :meth:`run` returns the summary (also written to ``summary.json``)."""

    def __init__(self, config: DemoConfig, output: DemoOutput) -> None:
        self.config = config
        self.output = output
        self.out = config.out.expanduser().absolute()
        self.dataset_dir = self.out / DATASET_DIR
        self.model_dir = self.out / MODEL_DIR
        self.namespace = "/" + config.namespace.strip("/") if config.namespace.strip("/") else ""
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self.summary: dict[str, Any] = {
            "status": "running",
            "stage": "",
            "error": "",
            "out_dir": str(self.out),
            "started": _now_iso(),
            "config": config.to_dict(),
            "stage_seconds": {},
        }
        self.schedule: SceneSchedule | None = None
        self.robot = SimulatedRobot()
        # rclpy objects (set up in _start_ros)
        self._context = None
        self._executor = None
        self._spin_thread: threading.Thread | None = None
        self._spin_done = threading.Event()
        self._node = None
        self._nodes: dict[str, Any] = {}
        self._pubs: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}
        self._subs: list[Any] = []
        # shared with callbacks (executor threads)
        self._lock = threading.Lock()
        self._first_stamp_ns: int | None = None
        self._train_status: dict[str, Any] | None = None
        self._train_progress: Callable[[Any], None] | None = None
        self._scores: list[dict[str, Any]] = []
        self._motion: dict[str, Motion] = {}
        self._driving = False
        self._transitions: list[dict[str, Any]] = []
        self._log_handler: logging.Handler | None = None
        self._weights = ""
        self._ros_log = logging.getLogger(f"{__name__}.ros")
        self._story = logging.getLogger(f"{__name__}.story")

    # -- public --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to stop (safe from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> dict[str, Any]:
        """Run every stage; returns the summary whose ``status`` is completed, interrupted or failed.

        Raises :class:`ConfigError` (before anything starts) for unusable options or output directory.
        """
        cfg = self.config
        weights, note = resolve_weights(cfg.weights)
        replaced = prepare_out_dir(self.out)
        self._open_log()
        self.summary["weights"] = {
            "requested": cfg.weights or "imagenet if cached",
            "used": weights,
            "note": note,
        }
        self._weights = weights
        self._say(
            f"dli-perception demo: {', '.join(cfg.classes)} - the DLI workflow (collect, train, classify, "
            "react) with a synthetic camera and a simulated robot; nothing is downloaded"
        )
        self._say(
            f"output: {self.out}{' (the previous demo run there was replaced)' if replaced else ''}; "
            "Ctrl-C stops cleanly at any stage"
        )
        stage = ""
        try:
            self._start_ros()
            for stage in STAGES:
                self.summary["stage"] = stage
                if self._stop.is_set():
                    raise Interrupted
                started = time.monotonic()
                getattr(self, f"_stage_{stage}")()
                self.summary["stage_seconds"][stage] = round(time.monotonic() - started, 2)
            self.summary["status"] = "completed"
        except Interrupted:
            self.summary["status"] = "interrupted"
            self._say(f"\ninterrupted during the {stage or 'start-up'} stage; stopping the nodes")
        except DliPerceptionError as exc:
            self.summary["status"] = "failed"
            self.summary["error"] = str(exc)
            self._say(f"\nthe {stage or 'start-up'} stage failed: {exc}")
        finally:
            self._shutdown_ros()
            if self.summary["status"] != "completed":
                self._say("all nodes stopped (camera released, dataset closed, a zero Twist sent if driving)")
            self.summary["duration_s"] = round(time.monotonic() - self._t0, 2)
            self._finish_outputs()
            self._write_summary()
            self._close_log()
        return self.summary

    # -- log ------------------------------------------------------------------------------------
    def _open_log(self) -> None:
        handler = logging.FileHandler(self.out / LOG_FILE, mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        package = logging.getLogger("dli_perception")
        self._saved_level = package.level
        if package.getEffectiveLevel() > logging.INFO:
            package.setLevel(logging.INFO)
        package.addHandler(handler)
        # Node messages go to demo.log only (the demo reports errors itself), not to the console handlers.
        self._ros_log.propagate = False
        self._ros_log.addHandler(handler)
        self._ros_log.setLevel(logging.DEBUG)
        self._log_handler = handler

    def _close_log(self) -> None:
        if self._log_handler is not None:
            package = logging.getLogger("dli_perception")
            package.removeHandler(self._log_handler)
            package.setLevel(self._saved_level)
            self._ros_log.removeHandler(self._log_handler)
            self._ros_log.propagate = True
            self._log_handler.close()
            self._log_handler = None

    def _say(self, text: str) -> None:
        for line in text.strip("\n").splitlines() or [""]:
            self._story.info(line)
        self.output.say(text)

    # -- waiting --------------------------------------------------------------------------------
    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)):
            raise Interrupted

    def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not happen within {timeout:g} s; see {self.out / LOG_FILE}")
            self._sleep(0.02)

    def _call(
        self, name: str, request: Any, timeout: float = SERVICE_TIMEOUT_S, *, stoppable: bool = True
    ) -> Any:
        """Call one of the demo's service clients; DemoError when it does not answer in time.

        ``stoppable``: a stop request abandons the call (raises :class:`Interrupted`); clean-up passes False.
        """
        client = self._clients[name]
        if stoppable:
            self._wait_until(client.service_is_ready, timeout, f"service {client.srv_name}")
        elif not _poll(client.service_is_ready, timeout):
            raise DemoError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if stoppable and self._stop.is_set():
                future.cancel()
                raise Interrupted
            if time.monotonic() > deadline:
                future.cancel()
                raise DemoError(f"service {client.srv_name} did not answer within {timeout:g} s")
            time.sleep(0.005)
        result = future.result()
        if result is None:
            raise DemoError(f"service {client.srv_name} failed: {future.exception()}")
        return result

    # -- ROS set-up -----------------------------------------------------------------------------
    def _start_ros(self) -> None:
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor

        from dli_perception import transport
        from dli_perception.nodes import localframes
        from dli_perception.nodes.runtime import _init_rclpy

        # Keep discovery on this machine unless the user chose otherwise: the demo talks to nobody else.
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        transport.apply_default_profile()
        args = ["dli-perception-demo"]
        if not self.config.verbose:
            # Node logs reach demo.log through /rosout (errors also the console); no log files elsewhere.
            args += ["--ros-args", "--disable-stdout-logs", "--disable-external-lib-logs"]
        self._context = Context()
        _init_rclpy(args, self._context)  # without rclpy's signal handlers: the command owns Ctrl-C
        localframes.enable()  # camera -> classifier frames by direct hand-off, as `dli-perception up` does
        self._executor = MultiThreadedExecutor(num_threads=4, context=self._context)
        self._make_helper_node()
        self._spin_thread = threading.Thread(target=self._spin, name="demo_executor", daemon=True)
        self._spin_thread.start()

    def _spin(self) -> None:
        executor = self._executor
        while not self._spin_done.is_set() and self._context.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # noqa: BLE001 - shutting down; a callback error is logged, not fatal
                if self._spin_done.is_set() or not self._context.ok():
                    return
                logger.error("executor: %s: %s", type(exc).__name__, exc)

    def _make_helper_node(self) -> None:
        from geometry_msgs.msg import Twist
        from rcl_interfaces.msg import Log
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo
        from std_msgs.msg import String
        from std_srvs.srv import SetBool, Trigger

        from dli_perception.nodes.qos import EVENTS, LATCHED, SENSOR_DATA

        extra = {"namespace": self.namespace} if self.namespace else {}
        node = Node("demo", context=self._context, **extra)
        self._node = node
        # /rosout as rcl publishes it (reliable, transient local, deep): node messages logged before this
        # subscription was matched still arrive.
        rosout_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=1000,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._logger_prefix = self.namespace.strip("/").replace("/", ".") + "." if self.namespace else ""
        sub = self._subs.append
        sub(node.create_subscription(Log, "/rosout", self._on_rosout, rosout_qos))
        sub(node.create_subscription(CameraInfo, "camera_info", self._on_camera_info, SENSOR_DATA))
        sub(node.create_subscription(String, "trainer_node/progress", self._on_train_progress, EVENTS))
        sub(node.create_subscription(String, "trainer_node/status", self._on_train_status, LATCHED))
        sub(node.create_subscription(String, "classifier_node/scores", self._on_scores, EVENTS))
        sub(node.create_subscription(String, "reaction_node/state", self._on_reaction_state, LATCHED))
        sub(node.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, EVENTS))
        self._pubs["teach_label"] = node.create_publisher(String, "teach_label", EVENTS)
        self._clients["capture"] = node.create_client(Trigger, "recorder_node/capture")
        self._clients["undo"] = node.create_client(Trigger, "recorder_node/undo")
        self._clients["train"] = node.create_client(Trigger, "trainer_node/train")
        self._clients["cancel"] = node.create_client(Trigger, "trainer_node/cancel")
        self._clients["enable"] = node.create_client(SetBool, "reaction_node/enable")
        self._executor.add_node(node)

    def _add_node(self, name: str, factory: Callable[..., Any], params: dict[str, Any]) -> Any:
        from rclpy.parameter import Parameter

        extra = {"namespace": self.namespace} if self.namespace else {}
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        node = factory(context=self._context, parameter_overrides=overrides, **extra)
        self._nodes[name] = node
        self._executor.add_node(node)
        return node

    def _remove_node(self, name: str) -> None:
        node = self._nodes.pop(name, None)
        if node is None:
            return
        try:
            self._executor.remove_node(node)
        except Exception as exc:  # noqa: BLE001 - destroy it anyway
            logger.warning("removing %s from the executor: %s", name, exc)
        node.destroy_node()

    def _shutdown_ros(self) -> None:
        """Destroy the nodes (newest first: the reaction node stops the robot), stop spinning, shut down."""
        from dli_perception.nodes import localframes

        for name in list(reversed(list(self._nodes))):
            try:
                self._remove_node(name)
            except Exception as exc:  # noqa: BLE001 - the other nodes' clean-up must still happen
                logger.error("clean-up of %s failed: %s: %s", name, type(exc).__name__, exc)
        if self._spin_thread is not None:
            time.sleep(0.1)  # let the last /rosout lines and the final zero Twist arrive
            self._spin_done.set()
            self._spin_thread.join(timeout=5.0)
        if self._executor is not None:
            if self._node is not None:
                self._executor.remove_node(self._node)
                self._node.destroy_node()
            self._executor.shutdown(timeout_sec=2.0)
        localframes.disable()
        if self._context is not None:
            self._context.try_shutdown()

    # -- callbacks (executor threads) -----------------------------------------------------------
    def _on_rosout(self, msg: Any) -> None:
        if self._logger_prefix and not msg.name.startswith(self._logger_prefix):
            return  # another process in this ROS domain
        level = {10: logging.DEBUG, 20: logging.INFO, 30: logging.WARNING, 40: logging.ERROR}.get(
            int(msg.level), logging.CRITICAL if int(msg.level) >= 50 else logging.INFO
        )
        self._ros_log.log(level, "[%s] %s", msg.name, msg.msg)
        if level >= logging.ERROR:
            self.output.say(f"      [{msg.name.rsplit('.', 1)[-1]}] error: {msg.msg}")

    def _on_camera_info(self, msg: Any) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            if self._first_stamp_ns is None or stamp < self._first_stamp_ns:
                self._first_stamp_ns = stamp

    def _on_train_progress(self, msg: Any) -> None:
        from dli_perception.core.contracts import TrainProgress
        from dli_perception.errors import BadMessageError

        callback = self._train_progress
        if callback is None:
            return
        try:
            event = TrainProgress.decode(msg.data)
        except BadMessageError:
            return
        callback(event)
        if event.phase == "export":
            self._say("      exporting the model (ONNX, checked against torch) and its report")

    def _on_train_status(self, msg: Any) -> None:
        try:
            status = json.loads(msg.data)
        except ValueError:
            return
        with self._lock:
            self._train_status = status

    def _on_scores(self, msg: Any) -> None:
        try:
            data = json.loads(msg.data)
            stamp = int(data["stamp"]["sec"]) * 1_000_000_000 + int(data["stamp"]["nanosec"])
        except (ValueError, KeyError, TypeError):
            return
        data["stamp_ns"] = stamp
        with self._lock:
            self._scores.append(data)

    def _on_reaction_state(self, msg: Any) -> None:
        try:
            state = json.loads(msg.data)
        except ValueError:
            return
        with self._lock:
            if not self._driving:
                return
            state["t_s"] = round(time.monotonic() - self._drive_t0, 2)
            state["pose"] = [round(v, 4) for v in self.robot.pose()]
            self._transitions.append(state)

    def _on_cmd_vel(self, msg: Any) -> None:
        now_ns = time.time_ns()
        seconds, distance, rotation = self.robot.command(msg.linear.x, msg.angular.z, now_ns / 1e9)
        schedule = self.schedule
        # The motion since the previous command happened while this scene was on screen (None: a change).
        cls = schedule.class_between(now_ns - round(seconds * 1e9), now_ns) if schedule else None
        with self._lock:
            if not self._driving:
                return
            motion = self._motion.setdefault(cls or SCENE_CHANGE, Motion())
            motion.seconds += seconds
            motion.distance_m += distance
            motion.rotation_rad += rotation
            motion.commands += 1

    # -- stage 1: camera ------------------------------------------------------------------------
    def _stage_camera(self) -> None:
        from dli_perception.nodes.camera_node import CameraNode

        cfg = self.config
        self._say(
            f"\n[1/5] camera_node: synthetic scenes {', '.join(cfg.classes)}, {cfg.width}x{cfg.height} at "
            f"{cfg.fps:g} fps, each scene shown for {cfg.scene_period_s:g} s in turn (namespace "
            f"{self.namespace or '/'})"
        )
        params = {
            "source": "synthetic",
            "width": cfg.width,
            "height": cfg.height,
            "fps": float(cfg.fps),
            "synthetic.classes": list(cfg.classes),
            "synthetic.scene_period_s": float(cfg.scene_period_s),
            "synthetic.seed": cfg.seed,
            "frame_id": "demo_camera",
        }
        before = time.time_ns()
        self._add_node("camera", CameraNode, params)  # opens the source, starting the scene cycle
        after = time.time_ns()
        self._wait_until(
            lambda: self._first_stamp_ns is not None, FIRST_FRAME_TIMEOUT_S, "the first camera frame"
        )
        schedule = SceneSchedule(cfg.classes, cfg.scene_period_s, before, after)
        self.schedule = schedule.narrowed(self._first_stamp_ns)
        uncertainty_ms = self.schedule.uncertainty_s * 1000
        self.summary["camera"] = {
            "classes": list(cfg.classes),
            "size": [cfg.width, cfg.height],
            "fps": cfg.fps,
            "scene_period_s": cfg.scene_period_s,
            "schedule_uncertainty_ms": round(uncertainty_ms, 2),
        }
        self._say(
            f"      frames are flowing; the scene schedule is known to {uncertainty_ms:.0f} ms (the camera "
            "opened while the demo watched the clock)"
        )

    # -- stage 2: collect -----------------------------------------------------------------------
    def _stage_collect(self) -> None:
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from dli_perception.nodes.recorder_node import RecorderNode

        cfg = self.config
        n = cfg.per_class
        self._say(
            f"\n[2/5] recorder_node: collecting {n} images per class into {self.dataset_dir}; the demo "
            "publishes teach_label for the scene on screen and calls ~/capture only well inside a scene"
        )
        self._add_node(
            "recorder",
            RecorderNode,
            {
                "dataset_dir": str(self.dataset_dir),
                "max_per_class": n,
                "max_frame_age_s": cfg.max_frame_age_s,
                "image_format": "jpg",
            },
        )
        schedule = self.schedule
        lookback_ns = round((cfg.max_frame_age_s + TRANSPORT_SLACK_S) * 1e9)
        lookahead_ns = round(CAPTURE_LOOKAHEAD_S * 1e9)
        saved: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        undone = 0
        label = None
        label_since = 0.0
        last_capture = 0.0
        total = n * len(cfg.classes)
        bar = self.output.progress(total, "      collecting", unit="img")
        try:
            while sum(saved.values()) < total:
                self._sleep(0.0)
                now = time.time_ns()
                cls = schedule.class_between(now - lookback_ns, now + lookahead_ns, SCENE_GUARD_S)
                if cls is None or saved[cls] >= n:
                    self._sleep(0.02)
                    continue
                if cls != label:
                    self._pubs["teach_label"].publish(String(data=cls))
                    label, label_since = cls, time.monotonic()
                    continue
                wait = (
                    max(label_since + LABEL_SETTLE_S, last_capture + 1.0 / cfg.capture_hz) - time.monotonic()
                )
                if wait > 0:
                    self._sleep(min(wait, 0.05))
                    continue
                last_capture = time.monotonic()
                t_call = time.time_ns()
                reply = self._call("capture", Trigger.Request())
                t_reply = time.time_ns()
                if not reply.success:
                    refused[reply.message.split(":")[0][:40]] += 1
                    logger.info("capture refused: %s", reply.message)
                    continue
                # The saved frame was received at most max_frame_age_s before the call and before the reply.
                if schedule.class_between(t_call - lookback_ns, t_reply, SCENE_GUARD_S) != cls:
                    self._call("undo", Trigger.Request())
                    undone += 1
                    logger.info(
                        "capture undone: the reply came too close to a scene change (%s)", reply.message
                    )
                    continue
                saved[cls] += 1
                bar.update_to(sum(saved.values()), total, **{c: saved[c] for c in cfg.classes})
        finally:
            bar.close()
            self.summary["dataset"] = {
                "dir": str(self.dataset_dir),
                "captures": {"saved": sum(saved.values()), "undone": undone, "refused": dict(refused)},
            }
        self._pubs["teach_label"].publish(String(data=""))  # nothing is being taught any more
        self._remove_node("recorder")  # flushes and closes the dataset
        self._check_dataset()

    def _check_dataset(self) -> None:
        """Every saved image's stamp against the schedule: the label must be the class that was on screen."""
        from dli_perception.core.dataset import DatasetStore

        with DatasetStore(self.dataset_dir, readonly=True) as store:
            entries = store.entries
            counts = store.counts()
        wrong = [e.file for e in entries if self.schedule.class_at(e.stamp_ns) not in (None, e.label)]
        unsure = [e.file for e in entries if self.schedule.class_at(e.stamp_ns) is None]
        info = self.summary["dataset"]
        info.update(counts=counts, images=len(entries), verified=len(entries) - len(wrong) - len(unsure))
        info.update(mislabelled=wrong, unverifiable=unsure)
        per = ", ".join(f"{k} {v}" for k, v in counts.items())
        captures = info["captures"]
        self._say(
            f"      dataset: {len(entries)} images ({per}); {info['verified']} image stamps checked against "
            f"the scene schedule, {len(wrong)} mislabelled; {captures['undone']} capture(s) undone near a "
            "scene change"
        )
        if wrong or unsure:
            self._say(
                f"      warning: {len(wrong)} mislabelled, {len(unsure)} unverifiable image(s): "
                f"{wrong + unsure}"
            )

    # -- stage 3: train -------------------------------------------------------------------------
    def _stage_train(self) -> None:
        from std_srvs.srv import Trigger

        from dli_perception.nodes.classifier_node import ClassifierNode
        from dli_perception.nodes.trainer_node import TrainerNode

        cfg = self.config
        weights = self._weights
        self._say(
            f"\n[3/5] trainer_node: fine-tuning resnet18 (head mode, {cfg.epochs} epochs, "
            f"{cfg.image_size} px, weights {weights}) on the dataset; classifier_node waits for the model"
        )
        note = self.summary["weights"]["note"]
        if note:
            self._say(f"      note: {note}")
        # The classifier starts first, so it hears the trainer's model_updated.
        self._add_node("classifier", ClassifierNode, {"backend": "auto"})
        self._add_node(
            "trainer",
            TrainerNode,
            {
                "dataset_dir": str(self.dataset_dir),
                "model_dir": str(self.model_dir),
                "mode": "head",
                "epochs": cfg.epochs,
                "lr": float(cfg.lr),
                "batch_size": cfg.batch_size,
                "weights": weights,
                "image_size": cfg.image_size,
                "seed": cfg.seed,
                "early_stop_patience": 0,
                "torch_threads": cfg.torch_threads,
                "progress_rate_hz": 10.0,
            },
        )
        progress = self.output.training_progress()
        self._train_progress = progress
        try:
            reply = self._call("train", Trigger.Request())
            if not reply.success:
                raise DemoError(f"trainer_node refused to train: {reply.message}")
            self._wait_until(lambda: self._train_status is not None, float("inf"), "training")
        except Interrupted:
            self._end_training_run()
            raise
        finally:
            self._train_progress = None
            close = getattr(progress, "close", None)
            if close is not None:
                close()
        status = dict(self._train_status)
        self.summary["training"] = {
            k: status.get(k)
            for k in (
                "status",
                "best_val_acc",
                "best_epoch",
                "epochs_run",
                "model_dir",
                "error",
                "duration_s",
            )
        }
        if status.get("status") == "failed":
            raise DemoError(f"training failed: {status.get('error')}")
        if not status.get("exported"):
            raise DemoError(
                f"training ended without a model ({status.get('status')}): {status.get('message')}"
            )
        self._describe_model(status)

    def _end_training_run(self) -> None:
        """After Ctrl-C: cancel the run and wait for it to end, so no thread is still exporting at exit.

        A run stops between two batches; an export already under way cannot be interrupted and finishes
        (writing the model directory atomically), which takes seconds.
        """
        from std_srvs.srv import Trigger

        if self._train_status is not None or "trainer" not in self._nodes:
            return
        self._say("      cancelling the training run (an export under way finishes first)")
        try:
            self._call("cancel", Trigger.Request(), timeout=5.0, stoppable=False)
        except DemoError as exc:
            logger.warning("cancelling the training run: %s", exc)
        if not _poll(lambda: self._train_status is not None, TRAINING_END_TIMEOUT_S):
            self._say(f"      the training run did not end within {TRAINING_END_TIMEOUT_S:g} s")
            return
        status = dict(self._train_status)
        self.summary["training"] = {
            k: status.get(k) for k in ("status", "best_val_acc", "model_dir", "message")
        }
        if status.get("exported"):
            self._say(f"      the run finished its export before stopping: {self.model_dir} is complete")
        else:
            self._say(
                f"      training {status.get('status')}: {status.get('message') or status.get('error')}"
            )

    def _describe_model(self, status: dict[str, Any]) -> None:
        from dli_perception.core.modeldir import REPORT_DIR, load_metadata

        meta = load_metadata(self.model_dir)
        report = sorted(p.name for p in (self.model_dir / REPORT_DIR).glob("*") if p.is_file())
        self.summary["training"].update(
            classes=list(meta.classes), report=report, weights_source=meta.weights_source
        )
        self._say(
            f"      validation accuracy {_pct(status.get('best_val_acc'))} "
            f"(best epoch {status.get('best_epoch')} of "
            f"{status.get('epochs_run')}, {status.get('duration_s', 0):.0f} s); model {self.model_dir} "
            f"(model.onnx, labels.txt, metadata.json; report/: {', '.join(report)})"
        )

    # -- stage 4: classify ----------------------------------------------------------------------
    def _stage_classify(self) -> None:
        cfg = self.config
        model = str(self.model_dir)

        def serving() -> bool:
            with self._lock:
                return any(s.get("model") == model for s in self._scores[-5:])

        self._wait_until(serving, MODEL_LOAD_TIMEOUT_S, f"classifier_node serving {model}")
        model_now = self._nodes["classifier"].model
        selection = f"{model_now.selection.chosen} on {model_now.selection.device}" if model_now else "?"
        seconds = cfg.live_cycles * len(cfg.classes) * cfg.scene_period_s
        self._say(
            f"\n[4/5] classifier_node took over the live stream with the new model ({selection}); measuring "
            f"for {seconds:g} s: each result against the scene on screen when its frame was taken"
        )
        with self._lock:
            self._scores.clear()
        live = _Live()
        end = time.monotonic() + seconds
        printed: set[int] = set()
        try:
            while time.monotonic() < end:
                self._sleep(0.1)
                self._take_scores(live)
                self._print_scenes(live, printed, final=False)
        except Interrupted:
            if live.scored:  # what was measured so far
                self._report_live(live, seconds - max(0.0, end - time.monotonic()))
            raise
        self._sleep(0.3)
        self._take_scores(live)
        self._print_scenes(live, printed, final=True)
        self._report_live(live, seconds)

    def _take_scores(self, live: _Live) -> None:
        with self._lock:
            batch, self._scores = self._scores, []
        for s in batch:
            live.frames += 1
            truth = self.schedule.class_at(s["stamp_ns"], LIVE_GUARD_S)
            if truth is None:
                live.skipped += 1
                continue
            live.scored += 1
            raw_ok = s.get("raw_label") == truth
            label_ok = s.get("label") == truth
            live.correct += raw_ok
            live.label_correct += label_ok
            per = live.per_class.setdefault(truth, Counter())
            per["frames"] += 1
            per["correct"] += raw_ok
            scene = live.scenes.setdefault(self.schedule.scene_index(s["stamp_ns"], LIVE_GUARD_S), Counter())
            scene["frames"] += 1
            scene["correct"] += raw_ok
            scene["label_correct"] += label_ok
            scene[f"said:{s.get('label')}"] += 1
            if isinstance(s.get("inference_ms"), (int, float)):
                live.inference_ms.append(float(s["inference_ms"]))

    def _print_scenes(self, live: _Live, printed: set[int], final: bool) -> None:
        current = self.schedule.slot(time.time_ns(), self.schedule.opened_after_ns)
        for index in sorted(live.scenes):
            if index in printed or (not final and index >= current):
                continue
            printed.add(index)
            c = live.scenes[index]
            cls = self.schedule.classes[index % len(self.schedule.classes)]
            said = ", ".join(f"{k[5:]} {v}" for k, v in c.most_common() if k.startswith("said:"))
            self._say(
                f"      scene {cls:<10} {c['correct']:>3}/{c['frames']:<3} frames right; "
                f"labels published: {said}"
            )

    def _report_live(self, live: _Live, seconds: float) -> None:
        acc = live.correct / live.scored if live.scored else None
        label_acc = live.label_correct / live.scored if live.scored else None
        chance = 1.0 / len(self.config.classes)
        median = sorted(live.inference_ms)[len(live.inference_ms) // 2] if live.inference_ms else None
        self.summary["live"] = {
            "seconds": seconds,
            "frames": live.frames,
            "scored": live.scored,
            "skipped_near_scene_changes": live.skipped,
            "accuracy": acc,
            "label_accuracy": label_acc,
            "chance": chance,
            "per_class": {
                k: {"frames": v["frames"], "correct": v["correct"], "accuracy": v["correct"] / v["frames"]}
                for k, v in sorted(live.per_class.items())
            },
            "inference_ms_median": median,
        }
        if not live.scored:
            raise DemoError("no classified frame could be scored: the classifier published no results")
        self._say(
            f"      live accuracy {_pct(acc)} per frame ({live.correct} of {live.scored} frames; "
            f"{live.skipped} within {LIVE_GUARD_S:g} s of a scene change left out; chance {_pct(chance)}), "
            f"smoothed label {_pct(label_acc)}"
            + (f"; inference {median:.1f} ms per frame" if median is not None else "")
        )

    # -- stage 5: drive -------------------------------------------------------------------------
    def _stage_drive(self) -> None:
        from std_srvs.srv import SetBool

        from dli_perception.core import fsutil
        from dli_perception.nodes.reaction_node import ReactionNode, load_table

        cfg = self.config
        table = action_table_for(cfg.classes)
        actions_file = ""
        if table is not None:
            import yaml

            actions_file = str(self.out / ACTIONS_FILE)
            fsutil.atomic_write_text(actions_file, yaml.safe_dump(table, sort_keys=False))
        self._actions = load_table(actions_file)
        seconds = cfg.drive_cycles * len(cfg.classes) * cfg.scene_period_s
        source = actions_file or "the built-in collision-avoidance table"
        moves = "; ".join(f"{name} -> {_describe_action(a)}" for name, a in self._actions.actions.items())
        self._say(
            f"\n[5/5] reaction_node: labels -> cmd_vel ({source}: {moves}); driving the simulated robot for "
            f"{seconds:g} s from the next scene change"
        )
        self._add_node("reaction", ReactionNode, {"actions_file": actions_file, "start_enabled": False})
        self._wait_until(self._clients["enable"].service_is_ready, SERVICE_TIMEOUT_S, "reaction_node/enable")
        schedule = self.schedule
        opened = (schedule.opened_after_ns + schedule.opened_before_ns) // 2
        scene = schedule.slot(time.time_ns(), opened) + 1
        self._sleep((opened + round(scene * schedule.period_s * 1e9) - time.time_ns()) / 1e9)
        with self._lock:
            self._drive_t0 = time.monotonic()
            self._driving = True
        self.robot.advance(time.time_ns() / 1e9)
        reply = self._call("enable", SetBool.Request(data=True))
        self._say(f"      ~/enable true: {reply.message}")
        end = self._drive_t0 + seconds
        shown = 0
        try:
            while time.monotonic() < end:
                self._sleep(0.05)
                shown = self._print_transitions(shown)
                now = schedule.slot(time.time_ns(), opened)
                if now != scene and time.monotonic() < end - 0.1:
                    scene = now
                    self._say(f"      scene change: now {schedule.classes[scene % len(cfg.classes)]}")
        except Interrupted:
            with self._lock:
                self._driving = False
            self._report_drive(
                time.monotonic() - self._drive_t0, "interrupted (the reaction node sends a zero Twist)"
            )
            raise
        reply = self._call("enable", SetBool.Request(data=False))
        self._sleep(0.3)  # the zero Twist arrives; the robot stops
        with self._lock:
            self._driving = False
        self._print_transitions(shown)
        self._report_drive(seconds, f"~/enable false: {reply.message}")

    def _print_transitions(self, shown: int) -> int:
        with self._lock:
            new = self._transitions[shown:]
        for t in new:
            label, reason = t.get("label") or "-", t.get("reason") or "?"
            if reason == "moving":
                doing = _describe_action(self._actions.lookup(label)[0])
            else:
                doing = f"stop ({reason})"
            self._say(
                f"      +{t['t_s']:5.2f} s  label {label:<10} -> {doing:<36} "
                f"robot at {format_pose(tuple(t['pose']))}"
            )
        return shown + len(new)

    def _report_drive(self, seconds: float, disabled: str) -> None:
        with self._lock:
            motion = {k: v.to_dict() for k, v in sorted(self._motion.items())}
            transitions = list(self._transitions)
        pose = self.robot.pose()
        self.summary["drive"] = {
            "seconds": seconds,
            "commands": self.robot.commands,
            "final_pose": {"x_m": pose[0], "y_m": pose[1], "theta_rad": pose[2]},
            "per_class": motion,
            "transitions": transitions,
        }
        for cls, m in motion.items():
            what = "around scene changes" if cls == SCENE_CHANGE else f"while {cls} was shown"
            self._say(
                f"      {what} ({m['seconds']:.1f} s): moved {m['distance_m']:.2f} m, turned "
                f"{m['rotation_deg']:.0f} deg ({m['commands']} cmd_vel messages)"
            )
        self._say(
            f"      {disabled}; {self.robot.commands} cmd_vel messages in all; the robot stopped at "
            f"{format_pose(pose)}"
        )

    # -- outputs --------------------------------------------------------------------------------
    def _finish_outputs(self) -> None:
        """Say what is on disk, whatever stage the run reached."""
        lines = []
        if (self.dataset_dir / "manifest.jsonl").is_file():
            try:
                from dli_perception.core.dataset import DatasetStore

                with DatasetStore(self.dataset_dir, readonly=True) as store:
                    counts = store.counts()
                per = ", ".join(f"{k} {v}" for k, v in counts.items()) or "empty"
                lines.append(f"dataset   {self.dataset_dir} ({per})")
                self.summary.setdefault("dataset", {})["counts"] = counts
            except DliPerceptionError as exc:
                lines.append(f"dataset   {self.dataset_dir} (unreadable: {exc})")
        if (self.model_dir / "metadata.json").is_file():
            lines.append(f"model     {self.model_dir} (report plots in {self.model_dir / 'report'})")
        ckpt = self.out / f"{MODEL_DIR}.checkpoints"
        if ckpt.is_dir() and any(ckpt.iterdir()) and not (self.model_dir / "metadata.json").is_file():
            lines.append(f"checkpoints {ckpt} (the best epoch so far)")
        lines.append(f"log       {self.out / LOG_FILE}")
        lines.append(f"summary   {self.out / SUMMARY_FILE}")
        status = self.summary["status"]
        head = {"completed": "done", "interrupted": "stopped early", "failed": "failed"}.get(status, status)
        minutes, secs = divmod(round(self.summary["duration_s"]), 60)
        self._say(
            f"\n{head} after {minutes}m{secs:02d}s; outputs:\n" + "\n".join(f"  {line}" for line in lines)
        )
        if status == "completed":
            live = self.summary.get("live", {})
            self._say(
                f"validation accuracy {_pct(self.summary.get('training', {}).get('best_val_acc'))}, "
                "live accuracy "
                f"{_pct(live.get('accuracy'))} (chance {_pct(live.get('chance'))})"
            )

    def _write_summary(self) -> None:
        from dli_perception.core import fsutil

        try:
            fsutil.atomic_write_text(
                self.out / SUMMARY_FILE, json.dumps(self.summary, indent=2, default=str) + "\n"
            )
        except OSError as exc:
            logger.error("could not write %s: %s", self.out / SUMMARY_FILE, exc)
