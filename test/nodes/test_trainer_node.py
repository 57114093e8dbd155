"""trainer_node over real services and topics: real (tiny) training runs on synthetic scenes rendered into an
image folder, in one process and as a process stopped with signals while it trains.

Runs use 64x64 images, random weights (``weights: none``) and one torch thread, so they take seconds.
The test is the operator: it trains, cancels and watches progress, status, announced models and
diagnostics through the package's graph client; only the latched ``model_updated`` durability is
checked with a raw subscription of its own.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from graphutil import Spinner, graph_client, refused, ros_args, stop_and_check, unique_ns, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from dli_perception.core.contracts import TrainStatus
from dli_perception.core.modeldir import load_metadata
from dli_perception.core.synthetic import SyntheticScenes
from dli_perception.graph_client import Reply, Teacher
from dli_perception.nodes.qos import LATCHED
from dli_perception.nodes.trainer_node import PARAMS, TrainerNode

pytestmark = pytest.mark.graph
DISCOVERY_S = 20.0  # deadline for discovery across processes (took up to ~3 s here)
RUN_S = 120.0  # deadline for a tiny run to end, export included (export alone took ~12 s on 2 busy cores)
CLASSES = ("free", "blocked", "left")

FAST = {
    "image_size": 64,
    "weights": "none",
    "epochs": 2,
    "mode": "head",
    "batch_size": 8,
    "val_fraction": 0.25,
    "early_stop_patience": 0,
    "torch_threads": 1,
    "progress_rate_hz": 100.0,
}
LONG = {**FAST, "mode": "finetune", "epochs": 200, "batch_size": 4}
"""A run that lasts minutes unless cancelled (every layer trained, 200 epochs)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trainer_ds")
    scenes = SyntheticScenes(CLASSES, 64, 64, seed=1)
    for name in CLASSES:
        (root / name).mkdir()
        for i in range(10):
            assert cv2.imwrite(
                str(root / name / f"{i:03d}.png"), cv2.cvtColor(scenes.render(name, i), cv2.COLOR_RGB2BGR)
            )
    return root


def _previous_model(path: Path) -> dict[str, bytes]:
    """A stand-in for the model a classifier is serving; returns its content to compare with later."""
    path.mkdir(parents=True)
    (path / "metadata.json").write_text('{"previous": true}\n')
    (path / "model.onnx").write_bytes(b"previous model")
    return _snapshot(path)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _leftovers(model_dir: Path) -> list[str]:
    """Temp directories of an unfinished export beside ``model_dir``."""
    return sorted(p.name for p in model_dir.parent.glob(f".{model_dir.name}.*"))


def _operator(spinner: Spinner, context, ns: str) -> Teacher:
    """What a person or a UI does: train and cancel, watch progress, status, models and diagnostics."""
    op = spinner.own(graph_client(context, ns, node_name="operator"))
    op.watch_models()
    return op


def _train(op: Teacher) -> Reply:
    return op.start_training(timeout_s=DISCOVERY_S)


def _cancel(op: Teacher) -> Reply:
    return op.cancel_training(timeout_s=DISCOVERY_S)


def _phases(op: Teacher) -> list[str]:
    return [p.phase for p in op.history("progress")]


def _statuses(op: Teacher) -> list[TrainStatus]:
    return op.history("train_status")


def _state(op: Teacher, **values: str):
    """The trainer's newest diagnostics once it holds ``values`` (None after 10 s)."""
    return op.wait_for_health("trainer_node", lambda h: all(h.values.get(k) == v for k, v in values.items()), 10.0)


def _trainer(context, ns: str, **params) -> TrainerNode:
    return TrainerNode(
        context=context, namespace=ns, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
    )


def test_train_publishes_progress_status_and_the_exported_model(ros_context, dataset, tmp_path):
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "models" / "m"
    trainer = _trainer(ros_context, ns, dataset_dir=str(dataset), model_dir=str(model_dir), **FAST)
    with Spinner(ros_context, trainer) as spinner:
        op = _operator(spinner, ros_context, ns)
        r = _train(op)
        assert r.ok and "training started" in r.message, r.message
        assert wait_for(lambda: _statuses(op), timeout=RUN_S), _phases(op)
        status = _statuses(op)[-1]
        assert status.status == "completed" and status.exported, status
        assert status.model_dir == str(model_dir) and status.epochs_run == 2
        assert list(status.classes) == sorted(CLASSES) and 0.0 <= status.best_val_acc <= 1.0
        assert wait_for(lambda: op.history("model_updated"), timeout=10), "no model_updated"
        assert op.history("model_updated") == [str(model_dir)]
        meta = load_metadata(model_dir)
        assert meta.classes == sorted(CLASSES) and meta.preprocess.size == 64
        assert meta.training["status"] == "completed"
        assert Path(status.checkpoint) == model_dir.parent / "m.checkpoints" / "best.pt"
        assert Path(status.checkpoint).is_file()
        # progress: the feature cache, batches of both epochs, epoch ends, the export and the end, in order
        events = op.history("progress")
        phases = [e.phase for e in events]
        for phase in ("load", "features", "train", "val", "epoch", "export", "done"):
            assert phase in phases, phases
        assert phases.index("features") < phases.index("train") < phases.index("epoch") < phases.index("done")
        assert phases.index("done") < phases.index("export")  # training ends, then the export
        epochs = [e for e in events if e.phase == "epoch"]
        assert [e.epoch for e in epochs] == [1, 2] and all(e.epochs == 2 for e in epochs)
        assert all(e.val_accuracy is not None and e.eta_s is not None for e in epochs)
        assert epochs[-1].eta_s == pytest.approx(0.0, abs=1e-6)
        train = [e for e in events if e.phase == "train"]
        assert train and all(1 <= e.batch <= e.batches and e.loss is not None for e in train)
        # diagnostics: idle again, with the last result
        health = _state(op, last_status="completed")
        assert health is not None, op.last_error
        values = health.values
        assert health.level == "ok" and values["state"] == "idle" and health.message.startswith("idle")
        assert values["runs_completed"] == "1" and values["last_model_dir"] == str(model_dir)
        # a subscriber that starts later with transient-local durability still gets the latest model
        late = spinner.add(Node("late_classifier", context=ros_context, namespace=ns))
        latched: list[str] = []
        late.create_subscription(String, "model_updated", lambda m: latched.append(m.data), LATCHED)
        assert wait_for(lambda: latched, timeout=DISCOVERY_S)
        assert latched == [str(model_dir)]
    assert _leftovers(model_dir) == []


def test_second_train_is_refused_and_cancel_keeps_the_previous_model(ros_context, dataset, tmp_path):
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "m"
    before = _previous_model(model_dir)
    trainer = _trainer(ros_context, ns, dataset_dir=str(dataset), model_dir=str(model_dir), **LONG)
    with Spinner(ros_context, trainer) as spinner:
        op = _operator(spinner, ros_context, ns)
        r = _cancel(op)
        assert refused(r, "no training"), r
        assert _train(op).ok, op.last_error
        assert wait_for(lambda: "train" in _phases(op), timeout=RUN_S), _phases(op)
        r = _train(op)
        assert refused(r, "already running", "~/cancel"), r.message
        assert _state(op, state="training"), op.last_error
        r = _cancel(op)
        assert r.ok and "cancelling" in r.message, r.message
        assert wait_for(lambda: _statuses(op), timeout=RUN_S)
        status = _statuses(op)[-1]
        assert status.status == "cancelled" and not status.exported, status
        assert status.epochs_run < LONG["epochs"]
        health = _state(op, state="idle")
        assert health is not None, op.last_error
        assert health.values["runs_cancelled"] == "1"
        assert trainer.state == "idle"
        models = op.history("model_updated")
    assert models == []
    assert _snapshot(model_dir) == before
    assert _leftovers(model_dir) == []


def test_missing_imagenet_weights_fail_the_run_with_the_explanation(ros_context, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "m"
    params = {**FAST, "weights": "imagenet"}
    trainer = _trainer(ros_context, ns, dataset_dir=str(dataset), model_dir=str(model_dir), **params)
    with Spinner(ros_context, trainer) as spinner:
        op = _operator(spinner, ros_context, ns)
        assert _train(op).ok, op.last_error  # accepted: the weights are checked by the run (it imports torch)
        assert wait_for(lambda: _statuses(op), timeout=RUN_S)
        status = _statuses(op)[-1]
        assert status.status == "failed" and not status.exported
        assert "torch hub cache" in status.error and "resnet18-f37072fd.pth" in status.error, status
        assert "weights='none'" in status.error
        health = _state(op, state="failed")
        assert health is not None, op.last_error
        assert health.level == "error" and "torch hub cache" in health.message
        assert health.values["runs_failed"] == "1"
        assert "train" not in _phases(op)  # failed before reading the dataset
        # the failed state does not block the next run; this one is cancelled at once
        assert trainer.set_parameters([Parameter("weights", value="none")])[0].successful
        assert _train(op).ok, op.last_error
        assert _cancel(op).ok, op.last_error
        assert wait_for(lambda: len(_statuses(op)) == 2, timeout=RUN_S)
        assert _statuses(op)[-1].status == "cancelled" and _statuses(op)[-1].error == ""
        assert _state(op, state="idle"), op.last_error
    assert not model_dir.exists()


def test_refusals_before_starting_and_parameter_checks(ros_context, dataset, tmp_path):
    ns = unique_ns("trainer_test")
    trainer = _trainer(ros_context, ns, dataset_dir=str(tmp_path / "nowhere"), model_dir=str(tmp_path / "m"), **FAST)
    with Spinner(ros_context, trainer) as spinner:
        op = _operator(spinner, ros_context, ns)
        r = _train(op)
        assert refused(r, "does not exist", "nowhere"), r
        results = trainer.set_parameters(
            [
                Parameter("dataset_dir", value=str(dataset)),
                Parameter("mode", value="head-then-finetune"),
                Parameter("epochs", value=1),
            ]
        )
        assert all(res.successful for res in results)
        r = _train(op)  # head-then-finetune needs two epochs: refused with TrainConfig's reason
        assert refused(r, "invalid training options", "epochs >= 2"), r
        bad = trainer.set_parameters(
            [
                Parameter("mode", value="everything"),
                Parameter("epochs", value=0),
                Parameter("weights", value="  "),
            ]
        )
        assert [res.successful for res in bad] == [False, False, False]
        inside = [Parameter("model_dir", value=str(dataset / "free" / "m")), Parameter("epochs", value=2)]
        assert all(res.successful for res in trainer.set_parameters(inside))
        r = _train(op)
        assert refused(r, "must not be inside dataset_dir"), r
        assert _statuses(op) == [] and trainer.runs["started"] == 0
    common = "dataset_dir model_dir mode epochs batch_size lr weights backbone image_size val_fraction seed device"
    assert {p.name for p in PARAMS} >= {*common.split(), "num_workers"}


@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_idle_process_exits_0_on_signals(node_process, ros_context, tmp_path, mode):
    ns = unique_ns("trainer_test")
    proc = node_process("trainer_node", "-r", f"__ns:={ns}", *ros_args(dataset_dir=str(tmp_path)))
    with graph_client(ros_context, ns, node_name="operator") as op:
        assert op.wait_for_services(DISCOVERY_S, ["cancel"]) == [], proc.output()
    assert stop_and_check(proc, mode) == 0, proc.output()
    assert "Traceback" not in proc.stderr(), proc.stderr()


def test_sigint_while_training_stops_the_run_and_keeps_the_previous_model(node_process, ros_context, dataset, tmp_path):
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "m"
    before = _previous_model(model_dir)
    params = {**LONG, "dataset_dir": str(dataset), "model_dir": str(model_dir)}
    # torch is imported by the run; it is stopped once batches are being trained
    proc = _stopped_in(node_process, ros_context, ns, params, "train", "int")
    err = proc.stderr()
    assert "Traceback" not in err, err
    assert "cancelling run 1" in proc.output(), proc.output()
    assert _snapshot(model_dir) == before
    assert _leftovers(model_dir) == []


STOP_WAIT_S = 10.0
"""A trainer must be gone within this after SIGINT: launch sends SIGKILL 10 s after it."""


def _stopped_in(node_process, context, ns: str, params: dict, phase: str, mode: str):
    """A trainer_node process that trained until progress reached ``phase``, then stopped (``mode``) in time, rc 0."""
    proc = node_process("trainer_node", "-r", f"__ns:={ns}", *ros_args(**params))
    with Spinner(context) as spinner:
        op = _operator(spinner, context, ns)
        r = _train(op)
        assert r.ok, r.message
        assert wait_for(lambda: phase in _phases(op), timeout=RUN_S), proc.output()
        assert stop_and_check(proc, mode, timeout=STOP_WAIT_S) == 0, proc.output()
    return proc


def test_sigint_during_the_export_exits_0_and_leaves_an_old_or_complete_model(
    node_process, ros_context, dataset, tmp_path
):
    """The export cannot be interrupted (native code); the node still exits 0 in time, and the
    model directory is the previous one or the complete new one, never a mix."""
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "m"
    before = _previous_model(model_dir)
    params = {**FAST, "dataset_dir": str(dataset), "model_dir": str(model_dir)}
    proc = _stopped_in(node_process, ros_context, ns, params, "export", "int2")
    err = proc.stderr()
    assert "Traceback" not in err and "terminate called" not in err, err
    after = _snapshot(model_dir)
    if after != before:  # the export finished before the process ended: a complete model dir
        load_metadata(model_dir)


def test_a_regression_dataset_trains_through_the_node_and_its_status_carries_the_xy_figures(ros_context, tmp_path):
    """The node trains whatever task the dataset holds (task auto): a regression run's status names the task
    and carries the validation mean XY error beside the mean-target baseline, not a meaningless accuracy."""
    from dli_perception.core import synthetic

    data = tmp_path / "xy_ds"
    synthetic.make_xy_dataset(data, 24, size=64, seed=3)
    ns, model_dir = unique_ns("trainer_xy"), tmp_path / "models" / "xy"
    trainer = _trainer(ros_context, ns, dataset_dir=str(data), model_dir=str(model_dir), **FAST)
    with Spinner(ros_context, trainer) as spinner:
        op = _operator(spinner, ros_context, ns)
        assert _train(op).ok
        assert wait_for(lambda: _statuses(op), timeout=RUN_S), _phases(op)
        status = _statuses(op)[-1]
        assert status.status == "completed" and status.exported, status
        assert status.task == "regression" and list(status.classes) == ["x", "y"]
        assert status.metrics["mean_error"] >= 0.0 and status.metrics["baseline_mean_error"] > 0.0
        assert status.headline.startswith("validation mean XY error")
    assert load_metadata(model_dir).task == "regression"
