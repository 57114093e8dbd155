"""The demo's script: five stages, each telling what it does, scored against what was on screen.

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
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from dli_perception.core.contracts import TrainStatus
from dli_perception.demo.config import (
    ACTIONS_FILE,
    CAPTURE_LOOKAHEAD_S,
    DATASET_DIR,
    FIRST_FRAME_TIMEOUT_S,
    LOG_FILE,
    MODEL_DIR,
    MODEL_LOAD_TIMEOUT_S,
    SCENE_GUARD_S,
    SERVICE_TIMEOUT_S,
    STAGES,
    SUMMARY_FILE,
    TRAINING_END_TIMEOUT_S,
    TRANSPORT_SLACK_S,
    DemoConfig,
    action_table_for,
    prepare_out_dir,
    resolve_weights,
)
from dli_perception.demo.robot import SimulatedRobot, format_pose
from dli_perception.demo.schedule import SceneSchedule
from dli_perception.demo.scoring import SCENE_CHANGE, DriveLog, LiveScore, check_dataset
from dli_perception.demo.story import DemoOutput, StoryLog, describe_action, now_iso, pct
from dli_perception.errors import DemoError, DliPerceptionError

logger = logging.getLogger("dli_perception.demo")

T = TypeVar("T")
WAIT_SLICE_S = 0.1
"""Longest a graph-client wait runs before the demo checks for a stop request (s)."""


class Interrupted(Exception):
    """The demo was asked to stop (Ctrl-C); raised inside a stage, handled by :meth:`Demo.run`."""


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
        self._weights = ""
        self._lock = threading.Lock()
        self._train_progress: Callable[[Any], None] | None = None
        self._scores: list = []  # Scores since the classify stage began, taken by the demo's thread

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
            self._start_graph()
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
            if self.graph is not None:
                self.graph.shutdown()
            if self.summary["status"] != "completed":
                self._say("all nodes stopped (camera released, dataset closed, a zero Twist sent if driving)")
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
            callback = self._train_progress
            if callback is not None:
                callback(value)
                if value.phase == "export":
                    self._say("      exporting the model (ONNX, checked against torch) and its report")
        elif kind == "scores":
            with self._lock:
                self._scores.append(value)
        elif kind == "reaction_state":
            self.drive.on_state(value)

    # -- waiting --------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.story.say(text)

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(max(0.0, seconds)):
            raise Interrupted

    def _await(self, attempt: Callable[[float], T | None], timeout: float, what: str) -> T:
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

    def _checked(self, reply: Any, what: str) -> Any:
        """A graph-client reply the node answered (succeeded or refused); DemoError when there was no answer."""
        from dli_perception.graph_client import Result

        if reply.result in (Result.SUCCEEDED, Result.REFUSED):
            return reply
        raise DemoError(f"{what}: {reply.message}")

    # -- stage 1: camera ------------------------------------------------------------------------
    def _stage_camera(self) -> None:
        from dli_perception.demo.nodeset import camera_params
        from dli_perception.nodes.camera_node import CameraNode

        cfg = self.config
        self._say(
            f"\n[1/5] camera_node: synthetic scenes {', '.join(cfg.classes)}, {cfg.width}x{cfg.height} at "
            f"{cfg.fps:g} fps, each scene shown for {cfg.scene_period_s:g} s in turn (namespace "
            f"{self.namespace or '/'})"
        )
        before = time.time_ns()
        self.graph.add("camera", CameraNode, camera_params(cfg))  # opens the source, starting the scene cycle
        after = time.time_ns()
        first = self._await(self.graph.teacher.wait_for_camera, FIRST_FRAME_TIMEOUT_S, "the first camera frame")
        self.schedule = SceneSchedule(cfg.classes, cfg.scene_period_s, before, after).narrowed(first)
        self.drive.schedule = self.schedule
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
        from dli_perception.demo.nodeset import recorder_params
        from dli_perception.nodes.recorder_node import RecorderNode

        cfg, teacher, schedule = self.config, self.graph.teacher, self.schedule
        n = cfg.per_class
        self._say(
            f"\n[2/5] recorder_node: collecting {n} images per class into {self.dataset_dir}; the demo "
            "publishes teach_label for the scene on screen and calls ~/capture only well inside a scene"
        )
        self.graph.add("recorder", RecorderNode, recorder_params(cfg, self.dataset_dir))
        lookback_ns = round((cfg.max_frame_age_s + TRANSPORT_SLACK_S) * 1e9)
        lookahead_ns = round(CAPTURE_LOOKAHEAD_S * 1e9)
        saved: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        undone = 0
        label = None
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
                if cls != label:  # the recorder confirms the label before the first capture with it
                    self._checked(teacher.set_label(cls, timeout_s=SERVICE_TIMEOUT_S), "teach_label")
                    label = cls
                    continue
                wait = last_capture + 1.0 / cfg.capture_hz - time.monotonic()
                if wait > 0:
                    self._sleep(min(wait, 0.05))
                    continue
                last_capture = time.monotonic()
                t_call = time.time_ns()
                reply = self._checked(teacher.capture(SERVICE_TIMEOUT_S), "recorder_node/capture")
                t_reply = time.time_ns()
                if not reply.ok:
                    refused[reply.message.split(":")[0][:40]] += 1
                    logger.info("capture refused: %s", reply.message)
                    continue
                # The saved frame was received at most max_frame_age_s before the call and before the reply.
                if schedule.class_between(t_call - lookback_ns, t_reply, SCENE_GUARD_S) != cls:
                    self._checked(teacher.undo(SERVICE_TIMEOUT_S), "recorder_node/undo")
                    undone += 1
                    logger.info("capture undone: the reply came too close to a scene change (%s)", reply.message)
                    continue
                saved[cls] += 1
                bar.update_to(sum(saved.values()), total, **{c: saved[c] for c in cfg.classes})
        finally:
            bar.close()
            self.summary["dataset"] = {
                "dir": str(self.dataset_dir),
                "captures": {"saved": sum(saved.values()), "undone": undone, "refused": dict(refused)},
            }
        teacher.set_label(None)  # nothing is being taught any more
        self.graph.remove("recorder")  # flushes and closes the dataset
        info, doubtful = check_dataset(self.dataset_dir, schedule)
        self.summary["dataset"].update(info)
        per = ", ".join(f"{k} {v}" for k, v in info["counts"].items())
        self._say(
            f"      dataset: {info['images']} images ({per}); {info['verified']} image stamps checked against "
            f"the scene schedule, {len(info['mislabelled'])} mislabelled; {undone} capture(s) undone near a "
            "scene change"
        )
        if doubtful:
            self._say(
                f"      warning: {len(info['mislabelled'])} mislabelled, {len(info['unverifiable'])} unverifiable "
                f"image(s): {doubtful}"
            )

    # -- stage 3: train -------------------------------------------------------------------------
    def _stage_train(self) -> None:
        from dli_perception.demo.nodeset import trainer_params
        from dli_perception.nodes.classifier_node import ClassifierNode
        from dli_perception.nodes.trainer_node import TrainerNode

        cfg, teacher = self.config, self.graph.teacher
        weights = self._weights
        self._say(
            f"\n[3/5] trainer_node: fine-tuning resnet18 (head mode, {cfg.epochs} epochs, "
            f"{cfg.image_size} px, weights {weights}) on the dataset; classifier_node waits for the model"
        )
        note = self.summary["weights"]["note"]
        if note:
            self._say(f"      note: {note}")
        # The classifier starts first, so it hears the trainer's model_updated.
        self.graph.add("classifier", ClassifierNode, {"backend": "auto"})
        self.graph.add("trainer", TrainerNode, trainer_params(cfg, self.dataset_dir, self.model_dir, weights))
        last = teacher.train_status()
        after_run = last.run if last is not None else 0
        progress = self.output.training_progress()
        self._train_progress = progress
        try:
            reply = self._checked(teacher.start_training(SERVICE_TIMEOUT_S), "trainer_node/train")
            if not reply.ok:
                raise DemoError(f"trainer_node refused to train: {reply.message}")
            status = self._await(
                lambda t: teacher.wait_for_training(t, after_run=after_run), float("inf"), "training"
            )
        except Interrupted:
            self._end_training_run(after_run)
            raise
        finally:
            self._train_progress = None
            close = getattr(progress, "close", None)
            if close is not None:
                close()
        keys = ("status", "best_val_acc", "best_epoch", "epochs_run", "model_dir", "error", "duration_s")
        self.summary["training"] = {k: getattr(status, k) for k in keys}
        if status.status == "failed":
            raise DemoError(f"training failed: {status.error}")
        if not status.exported:
            raise DemoError(f"training ended without a model ({status.status}): {status.message}")
        self._describe_model(status)

    def _end_training_run(self, after_run: int) -> None:
        """After Ctrl-C: cancel the run and wait for it to end, so no thread is still exporting at exit.

        A run stops between two batches; an export already under way cannot be interrupted and finishes
        (writing the model directory atomically), which takes seconds.
        """
        teacher = self.graph.teacher
        if "trainer" not in self.graph.nodes or teacher.wait_for_training(0.0, after_run=after_run) is not None:
            return
        self._say("      cancelling the training run (an export under way finishes first)")
        reply = teacher.cancel_training(timeout_s=5.0)
        if not reply.ok:
            logger.warning("cancelling the training run: %s", reply.message)
        status = teacher.wait_for_training(TRAINING_END_TIMEOUT_S, after_run=after_run)
        if status is None:
            self._say(f"      the training run did not end within {TRAINING_END_TIMEOUT_S:g} s")
            return
        self.summary["training"] = {k: getattr(status, k) for k in ("status", "best_val_acc", "model_dir", "message")}
        if status.exported:
            self._say(f"      the run finished its export before stopping: {self.model_dir} is complete")
        else:
            self._say(f"      training {status.status}: {status.message or status.error}")

    def _describe_model(self, status: TrainStatus) -> None:
        from dli_perception.core.modeldir import REPORT_DIR, load_metadata

        meta = load_metadata(self.model_dir)
        report = sorted(p.name for p in (self.model_dir / REPORT_DIR).glob("*") if p.is_file())
        self.summary["training"].update(classes=list(meta.classes), report=report, weights_source=meta.weights_source)
        self._say(
            f"      validation accuracy {pct(status.best_val_acc)} (best epoch {status.best_epoch} of "
            f"{status.epochs_run}, {status.duration_s or 0:.0f} s); model {self.model_dir} "
            f"(model.onnx, labels.txt, metadata.json; report/: {', '.join(report)})"
        )

    # -- stage 4: classify ----------------------------------------------------------------------
    def _stage_classify(self) -> None:
        cfg, teacher = self.config, self.graph.teacher
        model = str(self.model_dir)

        def serving(timeout_s: float) -> Any:
            reply = teacher.wait_for_model(model, timeout_s)
            return reply if reply.ok else None

        self._await(serving, MODEL_LOAD_TIMEOUT_S, f"classifier_node serving {model}")
        model_now = self.graph.nodes["classifier"].model
        selection = f"{model_now.selection.chosen} on {model_now.selection.device}" if model_now else "?"
        seconds = cfg.live_cycles * len(cfg.classes) * cfg.scene_period_s
        self._say(
            f"\n[4/5] classifier_node took over the live stream with the new model ({selection}); measuring "
            f"for {seconds:g} s: each result against the scene on screen when its frame was taken"
        )
        with self._lock:
            self._scores.clear()
        live = LiveScore(self.schedule)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self._sleep(0.1)
                self._take_scores(live, final=False)
        except Interrupted:
            if live.scored:  # what was measured so far
                self._report_live(live, seconds - max(0.0, end - time.monotonic()))
            raise
        self._sleep(0.3)
        self._take_scores(live, final=True)
        self._report_live(live, seconds)

    def _take_scores(self, live: LiveScore, final: bool) -> None:
        with self._lock:
            batch, self._scores = self._scores, []
        for scores in batch:
            live.add(scores)
        for line in live.finished_scenes(final):
            self._say(line)

    def _report_live(self, live: LiveScore, seconds: float) -> None:
        self.summary["live"] = live.summary(seconds)
        if not live.scored:
            raise DemoError("no classified frame could be scored: the classifier published no results")
        self._say(live.line())

    # -- stage 5: drive -------------------------------------------------------------------------
    def _stage_drive(self) -> None:
        from dli_perception.core import fsutil
        from dli_perception.nodes.reaction_node import ReactionNode, load_table

        cfg, teacher, schedule = self.config, self.graph.teacher, self.schedule
        table = action_table_for(cfg.classes)
        actions_file = ""
        if table is not None:
            import yaml

            actions_file = str(self.out / ACTIONS_FILE)
            fsutil.atomic_write_text(actions_file, yaml.safe_dump(table, sort_keys=False))
        self._actions = load_table(actions_file)
        seconds = cfg.drive_cycles * len(cfg.classes) * cfg.scene_period_s
        source = actions_file or "the built-in collision-avoidance table"
        moves = "; ".join(f"{name} -> {describe_action(a)}" for name, a in self._actions.actions.items())
        self._say(
            f"\n[5/5] reaction_node: labels -> cmd_vel ({source}: {moves}); driving the simulated robot for "
            f"{seconds:g} s from the next scene change"
        )
        self.graph.add("reaction", ReactionNode, {"actions_file": actions_file, "start_enabled": False})
        reaction = teacher.names.reaction
        self._await(lambda t: True if not teacher.wait_for_nodes([reaction], t) else None, SERVICE_TIMEOUT_S, reaction)
        opened = (schedule.opened_after_ns + schedule.opened_before_ns) // 2
        scene = schedule.slot(time.time_ns(), opened) + 1
        self._sleep((opened + round(scene * schedule.period_s * 1e9) - time.time_ns()) / 1e9)
        self.drive.start()
        reply = self._checked(teacher.enable_reaction(True, SERVICE_TIMEOUT_S), "reaction_node/enable")
        self._say(f"      ~/enable true: {reply.message}")
        end = self.drive.t0 + seconds
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
            self.drive.stop()
            teacher.stop()  # a zero Twist at once and the reaction disabled (the node sends another at exit)
            self._report_drive(time.monotonic() - self.drive.t0, "interrupted (the reaction node sends a zero Twist)")
            raise
        reply = self._checked(teacher.enable_reaction(False, SERVICE_TIMEOUT_S), "reaction_node/enable")
        self._sleep(0.3)  # the zero Twist arrives; the robot stops
        self.drive.stop()
        self._print_transitions(shown)
        self._report_drive(seconds, f"~/enable false: {reply.message}")

    def _print_transitions(self, shown: int) -> int:
        new = self.drive.new_transitions(shown)
        for t in new:
            label, reason = t.get("label") or "-", t.get("reason") or "?"
            if reason == "moving":
                doing = describe_action(self._actions.lookup(label)[0])
            else:
                doing = f"stop ({reason})"
            self._say(
                f"      +{t['t_s']:5.2f} s  label {label:<10} -> {doing:<36} robot at {format_pose(tuple(t['pose']))}"
            )
        return shown + len(new)

    def _report_drive(self, seconds: float, disabled: str) -> None:
        self.summary["drive"] = drive = self.drive.summary(seconds)
        for cls, m in drive["per_class"].items():
            what = "around scene changes" if cls == SCENE_CHANGE else f"while {cls} was shown"
            self._say(
                f"      {what} ({m['seconds']:.1f} s): moved {m['distance_m']:.2f} m, turned "
                f"{m['rotation_deg']:.0f} deg ({m['commands']} cmd_vel messages)"
            )
        self._say(
            f"      {disabled}; {self.robot.commands} cmd_vel messages in all; the robot stopped at "
            f"{format_pose(self.robot.pose())}"
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
        self._say(f"\n{head} after {minutes}m{secs:02d}s; outputs:\n" + "\n".join(f"  {line}" for line in lines))
        if status == "completed":
            live = self.summary.get("live", {})
            self._say(
                f"validation accuracy {pct(self.summary.get('training', {}).get('best_val_acc'))}, live accuracy "
                f"{pct(live.get('accuracy'))} (chance {pct(live.get('chance'))})"
            )

    def _write_summary(self) -> None:
        from dli_perception.core import fsutil

        try:
            fsutil.atomic_write_text(self.out / SUMMARY_FILE, json.dumps(self.summary, indent=2, default=str) + "\n")
        except OSError as exc:
            logger.error("could not write %s: %s", self.out / SUMMARY_FILE, exc)
