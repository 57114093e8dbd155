"""The regression demo's five stages: camera, collect, train, serve, drive (``demo --task regression``).

As :mod:`dli_perception.demo.stages` for classification, with a target point instead of a class: the
scene camera (:mod:`dli_perception.demo.xy_scene`) shows a red target dot; the recorder collects images
with their XY targets (the demo holds the dot still, teaches its point with ``target_xy`` and captures);
the trainer fine-tunes ResNet-18 with a 2-output head; the classifier publishes the predicted point on
``xy``; the reaction node (``policy:=steer``) steers the simulated robot towards it while the target
sweeps around the robot. Scores: target error per frame and tracking error while driving
(:mod:`dli_perception.demo.xy_scoring`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from dli_perception.core.contracts import TrainStatus
from dli_perception.demo.config import FIRST_FRAME_TIMEOUT_S, SERVICE_TIMEOUT_S
from dli_perception.demo.robot import format_pose
from dli_perception.demo.stages import Interrupted, run_training, start_reaction, wait_serving
from dli_perception.demo.xy_scoring import TrackingScore, XYLiveScore, check_xy_dataset
from dli_perception.errors import DemoError

if TYPE_CHECKING:
    from dli_perception.demo.scenario import Demo

logger = logging.getLogger("dli_perception.demo")

XY_STAGES = ("camera", "collect", "train", "serve", "drive")
TARGET_RANGE = 0.9
"""Collected targets are drawn uniformly from [-TARGET_RANGE, TARGET_RANGE] on both axes."""
HOLD_FRAMES = 2
"""Frames the scene camera shows a held target before it is captured (the recorder keeps the newest)."""
SAMPLE_PERIOD_S = 0.05
"""How often the tracking error is sampled while driving (s)."""


def _poll(predicate: Callable[[], bool]) -> Callable[[float], bool | None]:
    """A :meth:`Demo.wait` attempt: True once ``predicate()`` holds, checked again after each slice."""

    def attempt(timeout_s: float) -> bool | None:
        if predicate():
            return True
        time.sleep(timeout_s)
        return True if predicate() else None

    return attempt


# -- stage 1: camera ------------------------------------------------------------------------
def camera(demo: Demo) -> None:
    from dli_perception.demo.xy_scene import FOV_DEG, SceneCamera

    cfg = demo.config
    demo.say(
        f"\n[1/5] scene camera: a red target dot on a textured background, {cfg.width}x{cfg.height} at "
        f"{cfg.fps:g} fps, seen by a camera on the simulated robot ({FOV_DEG:g} deg field of view; namespace "
        f"{demo.namespace or '/'}); the demo keeps the true target of every frame"
    )
    demo.scene = SceneCamera(
        demo.graph.context, demo.namespace, cfg.width, cfg.height, cfg.fps, cfg.seed, pose=demo.robot_pose
    )
    demo.graph.adopt("camera", demo.scene.node)
    demo.wait(_poll(lambda: demo.scene.frames > 0), FIRST_FRAME_TIMEOUT_S, "the scene camera's first frame")
    demo.summary["camera"] = {"size": [cfg.width, cfg.height], "fps": cfg.fps, "fov_deg": FOV_DEG}


# -- stage 2: collect -----------------------------------------------------------------------
def collect(demo: Demo) -> None:
    from dli_perception.demo.nodeset import recorder_params
    from dli_perception.nodes.recorder_node import RecorderNode

    cfg, teacher, scene = demo.config, demo.graph.teacher, demo.scene
    n = cfg.per_class
    demo.say(
        f"\n[2/5] recorder_node (task regression): collecting {n} images with their XY targets into "
        f"{demo.dataset_dir}; for each the demo holds the dot at a random point, sets target_xy and captures"
    )
    demo.graph.add("recorder", RecorderNode, {**recorder_params(cfg, demo.dataset_dir), "task": "regression"})
    rng = np.random.default_rng(cfg.seed)
    saved = refused = 0
    bar = demo.output.progress(n, "      collecting", unit="img")
    try:
        while saved < n:
            x, y = (float(v) for v in np.round(rng.uniform(-TARGET_RANGE, TARGET_RANGE, size=2), 3))
            scene.hold(x, y)
            demo.checked(teacher.set_xy(x, y, timeout_s=SERVICE_TIMEOUT_S), "recorder_node target_xy")
            demo.wait(_poll(lambda: scene.frames_since_hold() >= HOLD_FRAMES), FIRST_FRAME_TIMEOUT_S, "the held target")
            demo.sleep(0.5 / cfg.fps)  # the newest frame reaches the recorder
            reply = demo.checked(teacher.capture(SERVICE_TIMEOUT_S), "recorder_node/capture")
            if not reply.ok:
                refused += 1
                logger.info("capture refused: %s", reply.message)
                if refused > 3 * n:
                    raise DemoError(f"the recorder refused {refused} captures; the last: {reply.message}")
                continue
            saved += 1
            bar.update_to(saved, n)
    finally:
        bar.close()
        demo.summary["dataset"] = {"dir": str(demo.dataset_dir), "captures": {"saved": saved, "refused": refused}}
    demo.graph.remove("recorder")  # flushes and closes the dataset
    info, doubtful = check_xy_dataset(demo.dataset_dir, scene.truth)
    demo.summary["dataset"].update(info)
    demo.mean_xy = tuple(info["mean_xy"])
    demo.say(
        f"      dataset: {info['images']} images; {info['verified']} targets checked against the frames they "
        f"were saved with, {len(info['mislabelled'])} wrong; mean target ({info['mean_xy'][0]:+.2f}, "
        f"{info['mean_xy'][1]:+.2f})"
    )
    if doubtful:
        demo.say(f"      warning: {len(doubtful)} image(s) whose target does not match their frame: {doubtful[:5]}")


# -- stage 3: train -------------------------------------------------------------------------
def train(demo: Demo) -> None:
    cfg = demo.config
    mode = cfg.resolved_train_mode
    demo.say(
        f"\n[3/5] trainer_node: fine-tuning resnet18 with a 2-output head (task regression, {mode}, {cfg.epochs} "
        f"epochs, {cfg.image_size} px, MSE, weights {demo.weights}); classifier_node waits for the model"
    )
    keys = ("status", "best_epoch", "epochs_run", "model_dir", "error", "duration_s")
    status = run_training(demo, {"task": "regression", "mode": mode}, keys)
    _describe_model(demo, status)


def _describe_model(demo: Demo, status: TrainStatus) -> None:
    from dli_perception.core.modeldir import load_metadata

    meta = load_metadata(demo.model_dir)
    metrics = dict(meta.metrics)
    demo.summary["training"].update(task=meta.task, outputs=list(meta.classes), metrics=metrics)
    if meta.task != "regression":
        raise DemoError(f"the trainer exported a {meta.task} model, not a regression one: {demo.model_dir}")
    error = metrics.get("mean_error")
    base = metrics.get("baseline_mean_error")
    val = f"validation mean error {error:.3f}" if isinstance(error, (int, float)) else "validation error -"
    if isinstance(base, (int, float)):
        val += f" (always the mean target: {base:.3f})"
    demo.say(
        f"      {val}; best epoch {status.best_epoch} of {status.epochs_run} ({status.duration_s or 0:.0f} s); "
        f"model {demo.model_dir} (outputs {', '.join(meta.classes)})"
    )


# -- stage 4: serve -------------------------------------------------------------------------
def serve(demo: Demo) -> None:
    cfg, scene = demo.config, demo.scene
    wait_serving(demo)
    seconds = cfg.live_cycles * scene.motion.period_s
    demo.say(
        f"\n[4/5] classifier_node publishes the predicted target on xy; the dot now sweeps around the standing "
        f"robot; measuring for {seconds:g} s: each prediction against the true target of its frame"
    )
    scene.follow()
    demo.take_xy()  # results from before the measurement
    live = XYLiveScore(scene.truth, demo.mean_xy)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            demo.sleep(0.1)
            for result in demo.take_xy():
                live.add(result)
    finally:
        for result in demo.take_xy():
            live.add(result)
        demo.summary["live"] = live.summary(seconds - max(0.0, end - time.monotonic()))
    if not live.scored:
        raise DemoError("no XY result could be scored: the classifier published none for the demo's frames")
    demo.say(live.line())


# -- stage 5: drive -------------------------------------------------------------------------
def drive(demo: Demo) -> None:
    cfg, teacher, scene = demo.config, demo.graph.teacher, demo.scene
    seconds = cfg.drive_cycles * scene.motion.period_s
    demo.say(
        f"\n[5/5] reaction_node (policy steer): xy -> cmd_vel like road following (angle atan2(x, (1 - y) / 2), "
        f"P and D gains); the simulated robot turns towards the target as it sweeps, for {seconds:g} s"
    )
    start_reaction(demo, {"policy": "steer"})
    tracking = TrackingScore()
    demo.drive.start()
    scene.follow()  # the motion starts again with the drive
    start_heading = demo.robot.pose()[2]
    reply = demo.checked(teacher.enable_reaction(True, SERVICE_TIMEOUT_S), "reaction_node/enable")
    demo.say(f"      ~/enable true: {reply.message}")
    end = time.monotonic() + seconds
    next_report = time.monotonic() + 2.0
    try:
        while time.monotonic() < end:
            demo.sleep(SAMPLE_PERIOD_S)
            now = time.time()
            seen = scene.view(now)
            bearing = scene.motion.bearing(scene.motion_time(now))
            tracking.add(seen.relative_bearing, bearing - start_heading)
            if time.monotonic() >= next_report:
                next_report += 2.0
                demo.say(
                    f"      +{seconds - (end - time.monotonic()):4.1f} s  target at {np.degrees(bearing):+5.0f} deg, "
                    f"robot {format_pose(demo.robot_pose(now))}, off by {np.degrees(seen.relative_bearing):+4.0f} deg"
                )
    except Interrupted:
        demo.drive.stop()
        teacher.stop()  # a zero Twist at once and the reaction disabled (the node sends another at exit)
        _report_drive(demo, tracking, time.monotonic() - demo.drive.t0)
        raise
    reply = demo.checked(teacher.enable_reaction(False, SERVICE_TIMEOUT_S), "reaction_node/enable")
    demo.sleep(0.3)  # the zero Twist arrives; the robot stops
    demo.drive.stop()
    _report_drive(demo, tracking, seconds)
    demo.say(tracking.line())
    demo.say(
        f"      ~/enable false: {reply.message}; {demo.robot.commands} cmd_vel messages in all; the robot "
        f"stopped at {format_pose(demo.robot.pose())}"
    )


def _report_drive(demo: Demo, tracking: TrackingScore, seconds: float) -> None:
    """The ``drive`` section of the summary: commands, final pose and the tracking error."""
    drive = demo.drive.summary(seconds)
    drive.pop("per_class", None)  # motion per scene class: the classification demo's
    demo.summary["drive"] = {**drive, "tracking": tracking.summary(seconds)}
