"""The demo's five stages, in order: camera, collect, train, classify, drive.

Each is a function of the running :class:`~dli_perception.demo.scenario.Demo`: it starts the stage's
nodes (:mod:`dli_perception.demo.nodeset`), drives them through the graph client, tells what happens
and fills its part of the summary. Waits give way to a stop request (:class:`Interrupted`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from dli_perception.core.contracts import TrainStatus
from dli_perception.demo.config import (
    ACTIONS_FILE,
    CAPTURE_LOOKAHEAD_S,
    FIRST_FRAME_TIMEOUT_S,
    MODEL_LOAD_TIMEOUT_S,
    SCENE_GUARD_S,
    SERVICE_TIMEOUT_S,
    TRAINING_END_TIMEOUT_S,
    TRANSPORT_SLACK_S,
    action_table_for,
)
from dli_perception.demo.robot import format_pose
from dli_perception.demo.schedule import SceneSchedule
from dli_perception.demo.scoring import SCENE_CHANGE, LiveScore, check_dataset
from dli_perception.demo.story import describe_action, pct
from dli_perception.errors import DemoError

if TYPE_CHECKING:
    from dli_perception.demo.scenario import Demo

logger = logging.getLogger("dli_perception.demo")


class Interrupted(Exception):
    """The demo was asked to stop (Ctrl-C); raised inside a stage, handled by :meth:`Demo.run`."""


# -- stage 1: camera ------------------------------------------------------------------------
def camera(demo: Demo) -> None:
    from dli_perception.demo.nodeset import camera_params
    from dli_perception.nodes.camera_node import CameraNode

    cfg = demo.config
    demo.say(
        f"\n[1/5] camera_node: synthetic scenes {', '.join(cfg.classes)}, {cfg.width}x{cfg.height} at "
        f"{cfg.fps:g} fps, each scene shown for {cfg.scene_period_s:g} s in turn (namespace "
        f"{demo.namespace or '/'})"
    )
    before = time.time_ns()
    demo.graph.add("camera", CameraNode, camera_params(cfg))  # opens the source, starting the scene cycle
    after = time.time_ns()
    first = demo.wait(demo.graph.teacher.wait_for_camera, FIRST_FRAME_TIMEOUT_S, "the first camera frame")
    demo.schedule = SceneSchedule(cfg.classes, cfg.scene_period_s, before, after).narrowed(first)
    demo.drive.schedule = demo.schedule
    uncertainty_ms = demo.schedule.uncertainty_s * 1000
    demo.summary["camera"] = {
        "classes": list(cfg.classes),
        "size": [cfg.width, cfg.height],
        "fps": cfg.fps,
        "scene_period_s": cfg.scene_period_s,
        "schedule_uncertainty_ms": round(uncertainty_ms, 2),
    }
    demo.say(
        f"      frames are flowing; the scene schedule is known to {uncertainty_ms:.0f} ms (the camera "
        "opened while the demo watched the clock)"
    )


# -- stage 2: collect -----------------------------------------------------------------------
def collect(demo: Demo) -> None:
    from dli_perception.demo.nodeset import recorder_params
    from dli_perception.nodes.recorder_node import RecorderNode

    cfg, teacher, schedule = demo.config, demo.graph.teacher, demo.schedule
    n = cfg.per_class
    demo.say(
        f"\n[2/5] recorder_node: collecting {n} images per class into {demo.dataset_dir}; the demo "
        "publishes teach_label for the scene on screen and calls ~/capture only well inside a scene"
    )
    demo.graph.add("recorder", RecorderNode, recorder_params(cfg, demo.dataset_dir))
    lookback_ns = round((cfg.max_frame_age_s + TRANSPORT_SLACK_S) * 1e9)
    lookahead_ns = round(CAPTURE_LOOKAHEAD_S * 1e9)
    saved: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    undone = 0
    label = None
    last_capture = 0.0
    total = n * len(cfg.classes)
    bar = demo.output.progress(total, "      collecting", unit="img")
    try:
        while sum(saved.values()) < total:
            demo.sleep(0.0)
            now = time.time_ns()
            cls = schedule.class_between(now - lookback_ns, now + lookahead_ns, SCENE_GUARD_S)
            if cls is None or saved[cls] >= n:
                demo.sleep(0.02)
                continue
            if cls != label:  # the recorder confirms the label before the first capture with it
                demo.checked(teacher.set_label(cls, timeout_s=SERVICE_TIMEOUT_S), "teach_label")
                label = cls
                continue
            wait = last_capture + 1.0 / cfg.capture_hz - time.monotonic()
            if wait > 0:
                demo.sleep(min(wait, 0.05))
                continue
            last_capture = time.monotonic()
            t_call = time.time_ns()
            reply = demo.checked(teacher.capture(SERVICE_TIMEOUT_S), "recorder_node/capture")
            t_reply = time.time_ns()
            if not reply.ok:
                refused[reply.message.split(":")[0][:40]] += 1
                logger.info("capture refused: %s", reply.message)
                continue
            # The saved frame was received at most max_frame_age_s before the call and before the reply.
            if schedule.class_between(t_call - lookback_ns, t_reply, SCENE_GUARD_S) != cls:
                demo.checked(teacher.undo(SERVICE_TIMEOUT_S), "recorder_node/undo")
                undone += 1
                logger.info("capture undone: the reply came too close to a scene change (%s)", reply.message)
                continue
            saved[cls] += 1
            bar.update_to(sum(saved.values()), total, **{c: saved[c] for c in cfg.classes})
    finally:
        bar.close()
        demo.summary["dataset"] = {
            "dir": str(demo.dataset_dir),
            "captures": {"saved": sum(saved.values()), "undone": undone, "refused": dict(refused)},
        }
    teacher.set_label(None)  # nothing is being taught any more
    demo.graph.remove("recorder")  # flushes and closes the dataset
    info, doubtful = check_dataset(demo.dataset_dir, schedule)
    demo.summary["dataset"].update(info)
    per = ", ".join(f"{k} {v}" for k, v in info["counts"].items())
    demo.say(
        f"      dataset: {info['images']} images ({per}); {info['verified']} image stamps checked against "
        f"the scene schedule, {len(info['mislabelled'])} mislabelled; {undone} capture(s) undone near a "
        "scene change"
    )
    if doubtful:
        demo.say(
            f"      warning: {len(info['mislabelled'])} mislabelled, {len(info['unverifiable'])} unverifiable "
            f"image(s): {doubtful}"
        )


# -- stage 3: train -------------------------------------------------------------------------
def train(demo: Demo) -> None:
    cfg = demo.config
    weights = demo.weights
    demo.say(
        f"\n[3/5] trainer_node: fine-tuning resnet18 (head mode, {cfg.epochs} epochs, "
        f"{cfg.image_size} px, weights {weights}) on the dataset; classifier_node waits for the model"
    )
    keys = ("status", "best_val_acc", "best_epoch", "epochs_run", "model_dir", "error", "duration_s")
    status = run_training(demo, {}, keys)
    _describe_model(demo, status)


def run_training(demo: Demo, extra_params: dict[str, Any], keys: tuple[str, ...]) -> TrainStatus:
    """Start classifier_node and trainer_node (the demo's trainer parameters and ``extra_params``), train once
    and wait for the exported model; says the weights' note first, if any.

    The classifier starts first, so it hears the trainer's model_updated. ``keys`` of the final
    status go into the summary's ``training``. Raises :class:`DemoError` when the run fails or ends
    without a model; a stop request cancels the run (:func:`end_training_run`).
    """
    from dli_perception.demo.nodeset import trainer_params
    from dli_perception.nodes.classifier_node import ClassifierNode
    from dli_perception.nodes.trainer_node import TrainerNode

    note = demo.summary["weights"]["note"]
    if note:
        demo.say(f"      note: {note}")
    teacher = demo.graph.teacher
    params = trainer_params(demo.config, demo.dataset_dir, demo.model_dir, demo.weights)
    demo.graph.add("classifier", ClassifierNode, {"backend": "auto"})
    demo.graph.add("trainer", TrainerNode, {**params, **extra_params})
    last = teacher.train_status()
    after_run = last.run if last is not None else 0
    progress = demo.output.training_progress()
    demo.train_progress = progress
    try:
        reply = demo.checked(teacher.start_training(SERVICE_TIMEOUT_S), "trainer_node/train")
        if not reply.ok:
            raise DemoError(f"trainer_node refused to train: {reply.message}")
        status = demo.wait(lambda t: teacher.wait_for_training(t, after_run=after_run), float("inf"), "training")
    except Interrupted:
        end_training_run(demo, after_run)
        raise
    finally:
        demo.train_progress = None
        close = getattr(progress, "close", None)
        if close is not None:
            close()
    demo.summary["training"] = {k: getattr(status, k, None) for k in keys}
    if status.status == "failed":
        raise DemoError(f"training failed: {status.error}")
    if not status.exported:
        raise DemoError(f"training ended without a model ({status.status}): {status.message}")
    return status


def end_training_run(demo: Demo, after_run: int) -> None:
    """After Ctrl-C: cancel the run and wait for it to end, so no thread is still exporting at exit.

    A run stops between two batches; an export already under way cannot be interrupted and finishes
    (writing the model directory atomically), which takes seconds.
    """
    teacher = demo.graph.teacher
    if "trainer" not in demo.graph.nodes or teacher.wait_for_training(0.0, after_run=after_run) is not None:
        return
    demo.say("      cancelling the training run (an export under way finishes first)")
    reply = teacher.cancel_training(timeout_s=5.0)
    if not reply.ok:
        logger.warning("cancelling the training run: %s", reply.message)
    status = teacher.wait_for_training(TRAINING_END_TIMEOUT_S, after_run=after_run)
    if status is None:
        demo.say(f"      the training run did not end within {TRAINING_END_TIMEOUT_S:g} s")
        return
    demo.summary["training"] = {k: getattr(status, k) for k in ("status", "best_val_acc", "model_dir", "message")}
    if status.exported:
        demo.say(f"      the run finished its export before stopping: {demo.model_dir} is complete")
    else:
        demo.say(f"      training {status.status}: {status.message or status.error}")


def _describe_model(demo: Demo, status: TrainStatus) -> None:
    from dli_perception.core.modeldir import REPORT_DIR, load_metadata

    meta = load_metadata(demo.model_dir)
    report = sorted(p.name for p in (demo.model_dir / REPORT_DIR).glob("*") if p.is_file())
    demo.summary["training"].update(classes=list(meta.classes), report=report, weights_source=meta.weights_source)
    demo.say(
        f"      validation accuracy {pct(status.best_val_acc)} (best epoch {status.best_epoch} of "
        f"{status.epochs_run}, {status.duration_s or 0:.0f} s); model {demo.model_dir} "
        f"(model.onnx, labels.txt, metadata.json; report/: {', '.join(report)})"
    )


# -- stage 4: classify ----------------------------------------------------------------------
def classify(demo: Demo) -> None:
    cfg = demo.config
    wait_serving(demo)
    model_now = demo.graph.nodes["classifier"].model
    selection = f"{model_now.selection.chosen} on {model_now.selection.device}" if model_now else "?"
    seconds = cfg.live_cycles * len(cfg.classes) * cfg.scene_period_s
    demo.say(
        f"\n[4/5] classifier_node took over the live stream with the new model ({selection}); measuring "
        f"for {seconds:g} s: each result against the scene on screen when its frame was taken"
    )
    demo.take_scores()  # results of the old model, or from before the measurement
    live = LiveScore(demo.schedule)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            demo.sleep(0.1)
            _take_scores(demo, live, final=False)
    except Interrupted:
        if live.scored:  # what was measured so far
            _report_live(demo, live, seconds - max(0.0, end - time.monotonic()))
        raise
    demo.sleep(0.3)
    _take_scores(demo, live, final=True)
    _report_live(demo, live, seconds)


def wait_serving(demo: Demo) -> None:
    """Wait until classifier_node serves the demo's trained model."""
    teacher, model = demo.graph.teacher, str(demo.model_dir)

    def serving(timeout_s: float) -> Any:
        reply = teacher.wait_for_model(model, timeout_s)
        return reply if reply.ok else None

    demo.wait(serving, MODEL_LOAD_TIMEOUT_S, f"classifier_node serving {model}")


def _take_scores(demo: Demo, live: LiveScore, final: bool) -> None:
    for scores in demo.take_scores():
        live.add(scores)
    for line in live.finished_scenes(final):
        demo.say(line)


def _report_live(demo: Demo, live: LiveScore, seconds: float) -> None:
    demo.summary["live"] = live.summary(seconds)
    if not live.scored:
        raise DemoError("no classified frame could be scored: the classifier published no results")
    demo.say(live.line())


# -- stage 5: drive -------------------------------------------------------------------------
def drive(demo: Demo) -> None:
    from dli_perception.core import fsutil
    from dli_perception.nodes.reaction_node import load_table

    cfg, teacher, schedule = demo.config, demo.graph.teacher, demo.schedule
    table = action_table_for(cfg.classes)
    actions_file = ""
    if table is not None:
        import yaml

        actions_file = str(demo.out / ACTIONS_FILE)
        fsutil.atomic_write_text(actions_file, yaml.safe_dump(table, sort_keys=False))
    actions = load_table(actions_file)
    seconds = cfg.drive_cycles * len(cfg.classes) * cfg.scene_period_s
    source = actions_file or "the built-in collision-avoidance table"
    moves = "; ".join(f"{name} -> {describe_action(a)}" for name, a in actions.actions.items())
    demo.say(
        f"\n[5/5] reaction_node: labels -> cmd_vel ({source}: {moves}); driving the simulated robot for "
        f"{seconds:g} s from the next scene change"
    )
    start_reaction(demo, {"actions_file": actions_file})
    opened = (schedule.opened_after_ns + schedule.opened_before_ns) // 2
    scene = schedule.slot(time.time_ns(), opened) + 1
    demo.sleep((opened + round(scene * schedule.period_s * 1e9) - time.time_ns()) / 1e9)
    demo.drive.start()
    reply = demo.checked(teacher.enable_reaction(True, SERVICE_TIMEOUT_S), "reaction_node/enable")
    demo.say(f"      ~/enable true: {reply.message}")
    end = demo.drive.t0 + seconds
    shown = 0
    try:
        while time.monotonic() < end:
            demo.sleep(0.05)
            shown = _print_transitions(demo, actions, shown)
            now = schedule.slot(time.time_ns(), opened)
            if now != scene and time.monotonic() < end - 0.1:
                scene = now
                demo.say(f"      scene change: now {schedule.classes[scene % len(cfg.classes)]}")
    except Interrupted:
        demo.drive.stop()
        teacher.stop()  # a zero Twist at once and the reaction disabled (the node sends another at exit)
        _report_drive(demo, time.monotonic() - demo.drive.t0, "interrupted (the reaction node sends a zero Twist)")
        raise
    reply = demo.checked(teacher.enable_reaction(False, SERVICE_TIMEOUT_S), "reaction_node/enable")
    demo.sleep(0.3)  # the zero Twist arrives; the robot stops
    demo.drive.stop()
    _print_transitions(demo, actions, shown)
    _report_drive(demo, seconds, f"~/enable false: {reply.message}")


def start_reaction(demo: Demo, params: dict[str, Any]) -> None:
    """Start reaction_node disabled, with ``params``, and wait until the graph sees it."""
    from dli_perception.nodes.reaction_node import ReactionNode

    teacher = demo.graph.teacher
    demo.graph.add("reaction", ReactionNode, {**params, "start_enabled": False})
    reaction = teacher.names.reaction
    demo.wait(lambda t: True if not teacher.wait_for_nodes([reaction], t) else None, SERVICE_TIMEOUT_S, reaction)


def _print_transitions(demo: Demo, actions: Any, shown: int) -> int:
    new = demo.drive.new_transitions(shown)
    for t in new:
        label, reason = t.get("label") or "-", t.get("reason") or "?"
        if reason == "moving":
            doing = describe_action(actions.lookup(label)[0])
        else:
            doing = f"stop ({reason})"
        demo.say(f"      +{t['t_s']:5.2f} s  label {label:<10} -> {doing:<36} robot at {format_pose(tuple(t['pose']))}")
    return shown + len(new)


def _report_drive(demo: Demo, seconds: float, disabled: str) -> None:
    demo.summary["drive"] = drive = demo.drive.summary(seconds)
    for cls, m in drive["per_class"].items():
        what = "around scene changes" if cls == SCENE_CHANGE else f"while {cls} was shown"
        demo.say(
            f"      {what} ({m['seconds']:.1f} s): moved {m['distance_m']:.2f} m, turned "
            f"{m['rotation_deg']:.0f} deg ({m['commands']} cmd_vel messages)"
        )
    demo.say(
        f"      {disabled}; {demo.robot.commands} cmd_vel messages in all; the robot stopped at "
        f"{format_pose(demo.robot.pose())}"
    )
