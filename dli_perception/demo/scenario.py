"""The demo's run: the five stages of :mod:`dli_perception.demo.stages` in turn, the summary, the outputs.

:class:`Demo` starts the nodes of :mod:`dli_perception.demo.nodeset` stage by stage and drives them
through the graph client only (teach a label, capture, train, wait for the model, enable the
reaction, stop); the results arrive as the typed contracts of :mod:`dli_perception.core.contracts`.
Every wait has a deadline and gives way to :meth:`Demo.stop` (the command calls it on Ctrl-C):
the current stage ends, the nodes are destroyed (the reaction node sends its final zero Twist)
and ``summary.json`` records how far the run got.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from dli_perception.core.contracts import Scores, XYResult
from dli_perception.demo import stages
from dli_perception.demo.config import (
    DATASET_DIR,
    LOG_FILE,
    MODEL_DIR,
    STAGES,
    SUMMARY_FILE,
    DemoConfig,
    prepare_out_dir,
    resolve_weights,
)
from dli_perception.demo.robot import SimulatedRobot
from dli_perception.demo.schedule import SceneSchedule
from dli_perception.demo.scoring import DriveLog
from dli_perception.demo.stages import Interrupted
from dli_perception.demo.story import DemoOutput, StoryLog, now_iso, pct
from dli_perception.errors import DemoError, DliPerceptionError

logger = logging.getLogger("dli_perception.demo")

T = TypeVar("T")
WAIT_SLICE_S = 0.1
"""Longest a graph-client wait runs before the demo checks for a stop request (s)."""


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
            "started": now_iso(),
            "config": config.to_dict(),
            "stage_seconds": {},
        }
        self.schedule: SceneSchedule | None = None
        self.robot = SimulatedRobot()
        self.drive = DriveLog(self.robot)
        self.story = StoryLog(output)
        self.graph = None  # DemoNodes, from the camera stage on
        self.weights = ""
        self._lock = threading.Lock()
        self.train_progress: Callable[[Any], None] | None = None
        self._scores: list[Scores] = []  # results since the last take_scores()
        self._xy: list[XYResult] = []  # regression results since the last take_xy()
        self._xy_stamps: deque[int] = deque(maxlen=256)  # the source stamps of the latest ones
        self.scene = None  # regression: the SceneCamera (xy_scene), from the camera stage on
        self.mean_xy: tuple[float, float] = (0.0, 0.0)  # regression: the dataset's mean target

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
        self.story.open(self.out / LOG_FILE)
        self.summary["weights"] = {"requested": cfg.weights or "imagenet if cached", "used": weights, "note": note}
        self.weights = weights
        regression = cfg.task == "regression"
        self.say(
            f"dli-perception demo: {'a moving target (XY regression)' if regression else ', '.join(cfg.classes)}"
            " - the DLI workflow (collect, train, classify, react) with a synthetic camera and a simulated robot; "
            "nothing is downloaded"
        )
        self.say(
            f"output: {self.out}{' (the previous demo run there was replaced)' if replaced else ''}; "
            "Ctrl-C stops cleanly at any stage"
        )
        stage = ""
        try:
            self._start_graph()
            if regression:
                from dli_perception.demo import xy_stages

                module, names = xy_stages, xy_stages.XY_STAGES
            else:
                module, names = stages, STAGES
            for stage in names:
                self.summary["stage"] = stage
                if self._stop.is_set():
                    raise Interrupted
                started = time.monotonic()
                getattr(module, stage)(self)
                self.summary["stage_seconds"][stage] = round(time.monotonic() - started, 2)
            self.summary["status"] = "completed"
        except Interrupted:
            self.summary["status"] = "interrupted"
            self.say(f"\ninterrupted during the {stage or 'start-up'} stage; stopping the nodes")
        except DliPerceptionError as exc:
            self.summary["status"] = "failed"
            self.summary["error"] = str(exc)
            self.say(f"\nthe {stage or 'start-up'} stage failed: {exc}")
        finally:
            if self.graph is not None:
                self.graph.shutdown()
            if self.summary["status"] != "completed":
                self.say("all nodes stopped (camera released, dataset closed, a zero Twist sent if driving)")
            self.summary["duration_s"] = round(time.monotonic() - self._t0, 2)
            self._finish_outputs()
            self._write_summary()
            self.story.close()
        return self.summary

    # -- the graph ------------------------------------------------------------------------------
    def _start_graph(self) -> None:
        from dli_perception.demo.nodeset import DemoNodes

        self.graph = DemoNodes(self.namespace, self.config.verbose, self._on_update)
        teacher = self.graph.teacher
        teacher.watch_log(self.story.node_message)
        teacher.watch_velocity(self.drive.on_velocity)
        teacher.watch_camera()  # before the camera starts: its first frame narrows the schedule

    def _on_update(self, kind: str, value: Any) -> None:
        """The graph client's results (on its thread): training progress, scores, reaction state."""
        if kind == "progress":
            callback = self.train_progress
            if callback is not None:
                callback(value)
                if value.phase == "export":
                    self.say("      exporting the model (ONNX, checked against torch) and its report")
        elif kind == "scores":
            with self._lock:
                self._scores.append(value)
        elif kind == "xy_result":
            with self._lock:
                if value.stamp_ns not in self._xy_stamps:  # one result per frame, however many ways it came
                    self._xy_stamps.append(value.stamp_ns)
                    self._xy.append(value)
        elif kind == "reaction_state":
            self.drive.on_state(value)

    # -- waiting --------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.story.say(text)

    def sleep(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)):
            raise Interrupted

    def take_scores(self) -> list[Scores]:
        """The classifier results that arrived since the last call (oldest first)."""
        with self._lock:
            batch, self._scores = self._scores, []
        return batch

    def take_xy(self) -> list[XYResult]:
        """The regression results that arrived since the last call (oldest first)."""
        with self._lock:
            batch, self._xy = self._xy, []
        return batch

    def robot_pose(self, t: float) -> tuple[float, float, float]:
        """The simulated robot's ``(x, y, theta)`` at wall-clock time ``t`` (s), its last command held till then."""
        self.robot.advance(t)
        return self.robot.pose()

    def wait(self, attempt: Callable[[float], T | None], timeout: float, what: str) -> T:
        """Run a graph-client wait in slices until it gives a result: Interrupted on stop, DemoError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if self._stop.is_set():
                raise Interrupted
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DemoError(f"{what} did not happen within {timeout:g} s; see {self.out / LOG_FILE}")
            result = attempt(min(WAIT_SLICE_S, remaining))
            if result is not None:
                return result

    def checked(self, reply: Any, what: str) -> Any:
        """A graph-client reply the node answered (succeeded or refused); DemoError when there was no answer."""
        from dli_perception.graph_client import Result

        if reply.result in (Result.SUCCEEDED, Result.REFUSED):
            return reply
        raise DemoError(f"{what}: {reply.message}")

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
        self.say(f"\n{head} after {minutes}m{secs:02d}s; outputs:\n" + "\n".join(f"  {line}" for line in lines))
        if status == "completed" and self.config.task == "regression":
            live, tracking = self.summary.get("live", {}), self.summary.get("drive", {}).get("tracking", {})
            self.say(
                f"mean target error {live.get('mean_target_error')} (always the mean target: "
                f"{live.get('mean_error_of_mean_target')}), mean tracking error "
                f"{tracking.get('mean_tracking_error_deg')} deg (not turning: "
                f"{tracking.get('mean_error_not_turning_deg')} deg)"
            )
        elif status == "completed":
            live = self.summary.get("live", {})
            self.say(
                f"validation accuracy {pct(self.summary.get('training', {}).get('best_val_acc'))}, live accuracy "
                f"{pct(live.get('accuracy'))} (chance {pct(live.get('chance'))})"
            )

    def _write_summary(self) -> None:
        from dli_perception.core import fsutil

        try:
            fsutil.atomic_write_text(self.out / SUMMARY_FILE, json.dumps(self.summary, indent=2, default=str) + "\n")
        except OSError as exc:
            logger.error("could not write %s: %s", self.out / SUMMARY_FILE, exc)
