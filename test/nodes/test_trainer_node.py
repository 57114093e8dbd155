"""trainer_node over real services and topics: real (tiny) training runs on synthetic scenes rendered into an
image folder, in one process and as a process stopped with signals while it trains.

Runs use 64x64 images, random weights (``weights: none``) and one torch thread, so they take seconds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from graphutil import Spinner, ros_args, stop_and_check, unique_ns, wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dli_perception.core.contracts import TrainProgress, TrainStatus
from dli_perception.core.modeldir import load_metadata
from dli_perception.core.synthetic import SyntheticScenes
from dli_perception.nodes.qos import EVENTS, LATCHED
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


def _level(level) -> int:
    return level[0] if isinstance(level, bytes) else int(level)


def _leftovers(model_dir: Path) -> list[str]:
    """Temp directories of an unfinished export beside ``model_dir``."""
    return sorted(p.name for p in model_dir.parent.glob(f".{model_dir.name}.*"))


class Operator(Node):
    """What a person or a UI does: call ~/train and ~/cancel, watch progress, status, models, diagnostics."""

    def __init__(self, context, ns: str) -> None:
        super().__init__("operator", context=context, namespace=ns)
        self.train_client = self.create_client(Trigger, "trainer_node/train")
        self.cancel_client = self.create_client(Trigger, "trainer_node/cancel")
        self.progress: list[TrainProgress] = []
        self.status: list[TrainStatus] = []
        self.models: list[str] = []
        self.diags: list[tuple[int, str, dict]] = []
        self.create_subscription(
            String, "trainer_node/progress", lambda m: self.progress.append(TrainProgress.decode(m.data)), EVENTS
        )
        self.create_subscription(
            String, "trainer_node/status", lambda m: self.status.append(TrainStatus.decode(m.data)), LATCHED
        )
        # the classifier's profile (EVENTS, volatile) must match the trainer's latched publisher
        self.create_subscription(String, "model_updated", lambda m: self.models.append(m.data), EVENTS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, EVENTS)
        self._diag_name = f"{ns.strip('/')}/trainer_node"

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name == self._diag_name:
                self.diags.append((_level(s.level), s.message, {kv.key: kv.value for kv in s.values}))

    def _call(self, client) -> Trigger.Response:
        assert client.wait_for_service(timeout_sec=DISCOVERY_S), f"{client.srv_name} not available"
        future = client.call_async(Trigger.Request())
        assert wait_for(future.done, timeout=DISCOVERY_S), f"{client.srv_name} did not answer"
        return future.result()

    def train(self) -> Trigger.Response:
        return self._call(self.train_client)

    def cancel(self) -> Trigger.Response:
        return self._call(self.cancel_client)

    def phases(self) -> list[str]:
        return [p.phase for p in list(self.progress)]


def _trainer(context, ns: str, **params) -> TrainerNode:
    return TrainerNode(
        context=context, namespace=ns, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
    )


def test_train_publishes_progress_status_and_the_exported_model(ros_context, dataset, tmp_path):
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "models" / "m"
    trainer = _trainer(ros_context, ns, dataset_dir=str(dataset), model_dir=str(model_dir), **FAST)
    op = Operator(ros_context, ns)
    with Spinner(ros_context, trainer, op, threads=3) as spinner:
        r = op.train()
        assert r.success and "training started" in r.message, r.message
        assert wait_for(lambda: op.status, timeout=RUN_S), op.phases()
        status = op.status[-1]
        assert status.status == "completed" and status.exported, status
        assert status.model_dir == str(model_dir) and status.epochs_run == 2
        assert list(status.classes) == sorted(CLASSES) and 0.0 <= status.best_val_acc <= 1.0
        assert wait_for(lambda: op.models, timeout=10), "no model_updated"
        assert op.models == [str(model_dir)]
        meta = load_metadata(model_dir)
        assert meta.classes == sorted(CLASSES) and meta.preprocess.size == 64
        assert meta.training["status"] == "completed"
        assert Path(status.checkpoint) == model_dir.parent / "m.checkpoints" / "best.pt"
        assert Path(status.checkpoint).is_file()
        # progress: the feature cache, batches of both epochs, epoch ends, the export and the end, in order
        events = list(op.progress)
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
        assert wait_for(lambda: op.diags and op.diags[-1][2].get("last_status") == "completed", timeout=10)
        level, message, values = op.diags[-1]
        assert level == _level(DiagnosticStatus.OK) and values["state"] == "idle" and message.startswith("idle")
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
    op = Operator(ros_context, ns)
    with Spinner(ros_context, trainer, op, threads=3):
        r = op.cancel()
        assert not r.success and "no training" in r.message
        assert op.train().success
        assert wait_for(lambda: "train" in op.phases(), timeout=RUN_S), op.phases()
        r = op.train()
        assert not r.success and "already running" in r.message and "~/cancel" in r.message, r.message
        assert wait_for(lambda: op.diags and op.diags[-1][2]["state"] == "training", timeout=10)
        r = op.cancel()
        assert r.success and "cancelling" in r.message, r.message
        assert wait_for(lambda: op.status, timeout=RUN_S)
        status = op.status[-1]
        assert status.status == "cancelled" and not status.exported, status
        assert status.epochs_run < LONG["epochs"]
        assert wait_for(lambda: op.diags and op.diags[-1][2]["state"] == "idle", timeout=10)
        assert op.diags[-1][2]["runs_cancelled"] == "1"
        assert trainer.state == "idle"
    assert op.models == []
    assert _snapshot(model_dir) == before
    assert _leftovers(model_dir) == []


def test_missing_imagenet_weights_fail_the_run_with_the_explanation(ros_context, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "m"
    params = {**FAST, "weights": "imagenet"}
    trainer = _trainer(ros_context, ns, dataset_dir=str(dataset), model_dir=str(model_dir), **params)
    op = Operator(ros_context, ns)
    with Spinner(ros_context, trainer, op, threads=3):
        assert op.train().success  # accepted: the weights are checked by the run (it imports torch)
        assert wait_for(lambda: op.status, timeout=RUN_S)
        status = op.status[-1]
        assert status.status == "failed" and not status.exported
        assert "torch hub cache" in status.error and "resnet18-f37072fd.pth" in status.error, status
        assert "weights='none'" in status.error
        assert wait_for(lambda: op.diags and op.diags[-1][2]["state"] == "failed", timeout=10)
        level, message, values = op.diags[-1]
        assert level == _level(DiagnosticStatus.ERROR) and "torch hub cache" in message
        assert values["runs_failed"] == "1"
        assert "train" not in op.phases()  # failed before reading the dataset
        # the failed state does not block the next run; this one is cancelled at once
        assert trainer.set_parameters([Parameter("weights", value="none")])[0].successful
        assert op.train().success
        assert op.cancel().success
        assert wait_for(lambda: len(op.status) == 2, timeout=RUN_S)
        assert op.status[-1].status == "cancelled" and op.status[-1].error == ""
        assert wait_for(lambda: op.diags and op.diags[-1][2]["state"] == "idle", timeout=10)
    assert not model_dir.exists()


def test_refusals_before_starting_and_parameter_checks(ros_context, dataset, tmp_path):
    ns = unique_ns("trainer_test")
    trainer = _trainer(ros_context, ns, dataset_dir=str(tmp_path / "nowhere"), model_dir=str(tmp_path / "m"), **FAST)
    op = Operator(ros_context, ns)
    with Spinner(ros_context, trainer, op, threads=3):
        r = op.train()
        assert not r.success and "does not exist" in r.message and "nowhere" in r.message
        results = trainer.set_parameters(
            [
                Parameter("dataset_dir", value=str(dataset)),
                Parameter("mode", value="head-then-finetune"),
                Parameter("epochs", value=1),
            ]
        )
        assert all(res.successful for res in results)
        r = op.train()  # head-then-finetune needs two epochs: refused with TrainConfig's reason
        assert not r.success and "invalid training options" in r.message and "epochs >= 2" in r.message
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
        r = op.train()
        assert not r.success and "must not be inside dataset_dir" in r.message
    assert op.status == [] and trainer.runs["started"] == 0
    common = "dataset_dir model_dir mode epochs batch_size lr weights backbone image_size val_fraction seed device"
    assert {p.name for p in PARAMS} >= {*common.split(), "num_workers"}


@pytest.mark.parametrize("mode", ["int", "int2", "term"])
def test_idle_process_exits_0_on_signals(node_process, ros_context, tmp_path, mode):
    ns = unique_ns("trainer_test")
    proc = node_process("trainer_node", "-r", f"__ns:={ns}", *ros_args(dataset_dir=str(tmp_path)))
    op = Operator(ros_context, ns)
    try:
        assert op.cancel_client.wait_for_service(timeout_sec=DISCOVERY_S), proc.output()
    finally:
        op.destroy_node()
    assert stop_and_check(proc, mode) == 0, proc.output()
    assert "Traceback" not in proc.stderr(), proc.stderr()


def test_sigint_while_training_stops_the_run_and_keeps_the_previous_model(node_process, ros_context, dataset, tmp_path):
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "m"
    before = _previous_model(model_dir)
    params = {**LONG, "dataset_dir": str(dataset), "model_dir": str(model_dir)}
    proc = node_process("trainer_node", "-r", f"__ns:={ns}", *ros_args(**params))
    op = Operator(ros_context, ns)
    with Spinner(ros_context, op):
        r = op.train()
        assert r.success, r.message
        # torch is imported by the run; wait until batches are being trained
        assert wait_for(lambda: "train" in op.phases(), timeout=RUN_S), proc.output()
        assert stop_and_check(proc, "int", timeout=STOP_WAIT_S) == 0, proc.output()
    err = proc.stderr()
    assert "Traceback" not in err, err
    assert "cancelling run 1" in proc.output(), proc.output()
    assert _snapshot(model_dir) == before
    assert _leftovers(model_dir) == []


STOP_WAIT_S = 10.0
"""A trainer must be gone within this after SIGINT: launch sends SIGKILL 10 s after it."""


def test_sigint_during_the_export_exits_0_and_leaves_an_old_or_complete_model(
    node_process, ros_context, dataset, tmp_path
):
    """The export cannot be interrupted (native code); the node still exits 0 in time, and the
    model directory is the previous one or the complete new one, never a mix."""
    ns, model_dir = unique_ns("trainer_test"), tmp_path / "m"
    before = _previous_model(model_dir)
    params = {**FAST, "dataset_dir": str(dataset), "model_dir": str(model_dir)}
    proc = node_process("trainer_node", "-r", f"__ns:={ns}", *ros_args(**params))
    op = Operator(ros_context, ns)
    with Spinner(ros_context, op):
        r = op.train()
        assert r.success, r.message
        assert wait_for(lambda: "export" in op.phases(), timeout=RUN_S), proc.output()
        assert stop_and_check(proc, "int2", timeout=STOP_WAIT_S) == 0, proc.output()
    err = proc.stderr()
    assert "Traceback" not in err and "terminate called" not in err, err
    after = _snapshot(model_dir)
    if after != before:  # the export finished before the process ended: a complete model dir
        load_metadata(model_dir)
