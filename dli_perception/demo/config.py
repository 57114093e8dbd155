"""What a demo run does (:class:`DemoConfig`), where it writes, which weights and which reaction table it uses."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dli_perception.core.synthetic import DEFAULT_CLASSES, MAX_CLASSES
from dli_perception.errors import ConfigError, InvalidLabelError

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
DEMO_TASKS = ("classification", "regression")
"""What the demo can teach: classes of scenes, or a target point to steer towards (XY regression)."""

TRANSPORT_SLACK_S = 0.05
"""Most a frame may take from its stamp to reaching a node in this process (s), with margin."""
CAPTURE_LOOKAHEAD_S = 0.25
"""A capture is started only when the scene stays the same at least this long (s)."""
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


@dataclass
class DemoConfig:
    """Everything a demo run does; :meth:`quick` gives the small settings used by tests.

    Sizes are pixels, times seconds, rates Hz. ``weights`` is ``"imagenet"``, ``"none"`` or
    the path of a ``.pth`` file (see :func:`resolve_weights` for ``None``). ``live_cycles`` and
    ``drive_cycles`` are how many times every scene is shown while measuring the live accuracy
    and while driving. ``task`` ``regression`` runs the XY-target story instead
    (:mod:`dli_perception.demo.xy_stages`): ``per_class`` is then the number of images in all, and
    the cycles count sweeps of the moving target. ``train_mode`` is the trainer's ``mode`` (empty: head for
    classification, finetune for regression, whose target position a frozen backbone's pooled features
    do not keep). ``torch_threads`` is 1 by default: the demo's batches are small, and on a
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
    task: str = "classification"
    train_mode: str = ""

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
        if overrides.get("task") == "regression":
            values.update(per_class=60, epochs=12, live_cycles=1, drive_cycles=1)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.task not in DEMO_TASKS:
            raise ConfigError(f"demo task {self.task!r} is not one of {list(DEMO_TASKS)}")
        if self.train_mode not in ("", "head", "finetune", "head-then-finetune"):
            raise ConfigError(f"train_mode {self.train_mode!r}: give head, finetune or head-then-finetune")
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
    def resolved_train_mode(self) -> str:
        """The trainer's ``mode``: ``train_mode``, or head (classification) / finetune (regression)."""
        return self.train_mode or ("finetune" if self.task == "regression" else "head")

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
