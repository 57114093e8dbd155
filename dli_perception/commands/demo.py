"""``dli-perception demo``: the whole workflow on a laptop: no camera, no robot, no download.

A synthetic camera shows scenes of a few classes; the recorder collects a labelled dataset;
the trainer fine-tunes ResNet-18; the classifier takes over the live stream and its accuracy
is measured against what was on screen; the reaction node drives a simulated robot. All in
one process with the package's real nodes (see :mod:`dli_perception.demo`).

Prints each stage with progress; leaves ``dataset/``, ``model/`` (with ``report/`` plots),
``demo.log`` and ``summary.json`` in ``--out``. ``--quick`` runs tiny sizes (under a minute or
two on 2 CPU cores). Exit codes: 0 done, 1 a stage failed, 130 stopped with Ctrl-C (or SIGTERM)
after a clean stop of every node; partial outputs stay and are listed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_CODES = {"completed": 0, "failed": 1, "interrupted": 130}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="the whole story (collect, train, classify, react), synthetic camera and simulated robot",
        description="Collect a labelled dataset from a synthetic camera, fine-tune a classifier, classify "
        "the live stream and drive a simulated robot, with the package's real nodes in one process. Needs no "
        "camera, no robot and no download. Options left out take the defaults (or the --quick ones).",
    )
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        default=Path("dli_demo"),
        metavar="DIR",
        help="output directory: dataset/, model/, demo.log, summary.json (default ./dli_demo; an "
        "earlier demo run there is replaced)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: 16 images per class, 96 px model input, 2 s scenes (for tests and a first look)",
    )
    p.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="classification (default): classes of scenes and an action table; regression: a moving target "
        "point, a 2-output model and a robot that steers towards it (scored by target and tracking error)",
    )
    p.add_argument("--classes", help="comma-separated scene classes (default free,blocked; up to 8)")
    p.add_argument(
        "--per-class",
        type=int,
        help="images to collect per class (default 40, --quick 16); regression: images in all (--quick 60)",
    )
    p.add_argument(
        "--weights",
        help="imagenet, none or a .pth file (default: imagenet when it is in the torch hub "
        "cache, else none, with a note: the demo never downloads)",
    )
    p.add_argument("--epochs", type=int, help="training epochs (head mode, cached features; default 50, --quick 100)")
    p.add_argument("--lr", type=float, help="learning rate of the head (default 0.01)")
    p.add_argument("--image-size", type=int, help="model input size in pixels (default 224, --quick 96)")
    p.add_argument(
        "--scene-period",
        type=float,
        dest="scene_period_s",
        help="seconds each scene is shown (default 3, --quick 2)",
    )
    p.add_argument("--fps", type=float, help="camera frame rate (default 15, --quick 10)")
    p.add_argument("--live-cycles", type=int, help="times each scene is shown while measuring live accuracy (2)")
    p.add_argument("--drive-cycles", type=int, help="times each scene is shown while driving (1)")
    p.add_argument("--seed", type=int, help="seed of the scenes and the training (default 0)")
    p.add_argument("--namespace", help="ROS namespace of the demo's nodes (default dli_demo)")
    p.add_argument("--threads", type=int, dest="torch_threads", help="CPU threads for training; 0: torch's default")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


OPTIONS = (
    "task",
    "per_class",
    "weights",
    "epochs",
    "lr",
    "image_size",
    "scene_period_s",
    "fps",
    "live_cycles",
    "drive_cycles",
    "seed",
    "namespace",
    "torch_threads",
)


def config_from_args(args: argparse.Namespace):
    """The :class:`~dli_perception.demo.DemoConfig` of the options; ConfigError for bad values."""
    from dli_perception.demo import DemoConfig

    values: dict[str, Any] = {k: getattr(args, k) for k in OPTIONS if getattr(args, k, None) is not None}
    values["out"] = args.out
    values["verbose"] = bool(getattr(args, "verbose", False))
    if args.classes is not None:
        values["classes"] = args.classes
    if values.get("task") == "regression" and not args.quick:
        values = {**REGRESSION_DEFAULTS, **values}
    return DemoConfig.quick(**values) if args.quick else DemoConfig(**values)


REGRESSION_DEFAULTS = {"per_class": 120, "epochs": 15, "image_size": 96, "live_cycles": 1, "drive_cycles": 2}
"""The regression demo's sizes without --quick: fine-tuning every layer on a CPU is slow at 224 px."""


class _NoBar:
    def update_to(self, done: int, total: int | None = None, **postfix: Any) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleOutput:
    """The demo's story on stdout, progress bars on stderr."""

    def __init__(self, progress: bool = True) -> None:
        self.enabled = progress

    def say(self, text: str) -> None:
        print(text, flush=True)

    def progress(self, total: int | None, desc: str, unit: str = "it"):
        if not self.enabled:
            return _NoBar()
        from dli_perception.commands.progress import ProgressBar

        return ProgressBar(total, desc, unit=unit)

    def training_progress(self):
        return EpochProgress(enabled=self.enabled)


class EpochProgress:
    """Training progress as two bars: the backbone feature cache (batches), then the run (epochs).

    One bar for the whole run rather than one per epoch: head epochs on cached features take
    milliseconds and the demo runs many of them.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._features = None
        self._epochs = None

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        from dli_perception.commands.progress import ProgressBar
        from dli_perception.commands.train_summary import format_seconds

        if event.phase == "features":
            if self._features is None:
                self._features = ProgressBar(event.batches or None, "      backbone features", unit="batch")
            self._features.update_to(event.batch, event.batches or None, eta=format_seconds(event.eta_s))
        elif event.phase in ("train", "val", "epoch"):
            self._close_features()
            if self._epochs is None:
                self._epochs = ProgressBar(event.epochs or None, "      training", unit="epoch")
            if event.phase == "epoch":
                values = {"loss": event.loss, "acc": event.accuracy, "val_acc": event.val_accuracy}
                name = event.metric_name
                if name != "accuracy":  # regression: mean_error; multi-label: macro_f1
                    values = {"loss": event.loss, f"val_{name}": event.val_metric}
                shown = {k: v for k, v in values.items() if v is not None}
                self._epochs.update_to(event.epoch, event.epochs, **shown, eta=format_seconds(event.eta_s))
        elif event.phase in ("export", "done"):
            self.close()

    def _close_features(self) -> None:
        if self._features is not None:
            self._features.close()
            self._features = None

    def close(self) -> None:
        self._close_features()
        if self._epochs is not None:
            self._epochs.close()
            self._epochs = None


@contextlib.contextmanager
def _stop_on_signals(stop, notice: str) -> Iterator[None]:
    """While active, SIGINT and SIGTERM call ``stop()`` once (printing ``notice``); later ones are ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if not fired.is_set():
            fired.set()
            print(notice, file=sys.stderr, flush=True)
            stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _quiet_console(verbose: bool) -> Iterator[None]:
    """Console log handlers show warnings and errors only (INFO lines go to demo.log), unless verbose."""
    if verbose:
        yield
        return
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    saved = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(max(h.level, logging.WARNING))
    try:
        yield
    finally:
        for h, level in zip(handlers, saved, strict=True):
            h.setLevel(level)


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 (done), 1 (a stage failed) or 130 (stopped with Ctrl-C/SIGTERM)."""
    from dli_perception.demo import Demo

    config = config_from_args(args)
    demo = Demo(config, ConsoleOutput(progress=getattr(args, "progress", True)))
    notice = "\nstopping: finishing the current step, then the nodes stop cleanly (this takes a few seconds)"
    with _quiet_console(config.verbose), _stop_on_signals(demo.stop, notice):
        summary = demo.run()
    return EXIT_CODES.get(summary["status"], 1)
