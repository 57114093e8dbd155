"""Transfer-learning core: real ResNet-18 training on a small image folder drawn in the test.

Images are 64x64 (``PreprocessConfig(size=64)``) and weights random (``weights="none"``), so a
run takes seconds on a CPU. torch runs single-threaded here: the suite shares two cores, and
thread spinning under contention made 2 threads several times slower than 1.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from dli_perception.core import training as T  # noqa: E402
from dli_perception.core.preprocess import PreprocessConfig, resize  # noqa: E402
from dli_perception.errors import ConfigError, DatasetError, TrainingError, WeightsNotFoundError  # noqa: E402

CLASSES = ("blue_circle", "green_square", "red_triangle")
PER_CLASS = 12


def draw(label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A BGR image of class ``label``: a coloured shape of its own on a noisy grey background."""
    img = np.full((size, size, 3), int(rng.integers(90, 140)), np.uint8)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    cx, cy, r = int(rng.integers(20, 44)), int(rng.integers(20, 44)), int(rng.integers(10, 16))
    colour = [(255, 40, 40), (40, 200, 40), (40, 40, 255)][label]
    if label == 0:
        cv2.circle(img, (cx, cy), r, colour, -1)
    elif label == 1:
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    else:
        cv2.fillPoly(img, [np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)])], colour)
    return img


def make_image_folder(root: Path, per_class: int = PER_CLASS, classes=CLASSES, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            assert cv2.imwrite(str(root / name / f"{i:03d}.png"), draw(label % 3, rng))
    return root


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def cfg(**kw) -> T.TrainConfig:
    base = dict(
        weights="none",
        preprocess=PreprocessConfig(size=64),
        batch_size=8,
        num_workers=0,
        val_fraction=0.25,
        early_stop_patience=0,
        epochs=2,
        mode="head",
        lr=0.05,
    )
    base.update(kw)
    return T.TrainConfig(**base)


class BackboneImages:
    """Counts images passing through a ResNet's forward (a real global forward hook)."""

    def __enter__(self):
        self.images = 0

        def hook(module, args, output):
            if isinstance(module, torchvision.models.ResNet):
                self.images += int(args[0].shape[0])

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- model factory


@pytest.mark.parametrize(("backbone", "head"), [("resnet18", "fc"), ("mobilenet_v3_small", "classifier.3")])
def test_build_model_replaces_head_with_n_outputs(backbone, head):
    model, info = T.build_model(backbone, num_classes=3, weights="none")
    fc = model.get_submodule(head)
    assert isinstance(fc, torch.nn.Linear)
    assert (fc.in_features, fc.out_features) == (T.BACKBONES[backbone].feature_dim, 3)
    assert info.source == "none" and info.describe() == "none"
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_registry_lists_resnet34_and_refuses_unknown_backbones():
    assert T.backbone_spec("resnet34").feature_dim == 512
    with pytest.raises(ConfigError, match="resnet18"):
        T.build_model("vgg99", num_classes=3, weights="none")
    with pytest.raises(ConfigError):
        T.build_model(num_classes=1, weights="none")


def test_imagenet_weights_not_cached_raise_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert T.imagenet_weights_path("resnet18") == expected
    with pytest.raises(WeightsNotFoundError) as err:
        T.build_model(num_classes=3, weights="imagenet")
    message = str(err.value)
    assert str(expected) in message and "TORCH_HOME" in message and "weights=" in message
    assert not expected.exists()  # no download was attempted


def test_missing_local_weights_file_raises(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        T.build_model(num_classes=3, weights=str(tmp_path / "nowhere.pth"))


def test_imagenet_shaped_state_dict_is_loaded_and_fc_adapted(tmp_path, monkeypatch, caplog):
    source = torchvision.models.resnet18()  # random weights, ImageNet-shaped (fc: 1000 classes)
    path = tmp_path / "resnet18_imagenet_like.pth"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="dli_perception.core.training"):
        model, info = T.build_model(num_classes=3, weights=str(path))
    assert (info.source, info.head_adapted, info.head_from) == ("file", True, 1000)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.out_features == 3
    adapted = [r for r in caplog.records if "fc adapted 1000 -> 3" in r.getMessage()]
    assert adapted and all(r.levelno == logging.INFO for r in adapted)

    # The same file under torchvision's cache name is what weights="imagenet" finds.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = T.imagenet_weights_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    model, info = T.build_model(num_classes=3, weights="imagenet")
    assert info.source == "imagenet" and info.describe() == "imagenet:ResNet18_Weights.IMAGENET1K_V1"
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_weights_of_another_backbone_are_refused(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(TrainingError, match="do not fit backbone 'resnet18'"):
        T.build_model(num_classes=3, weights=str(path))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(TrainingError, match="cannot read weights file"):
        T.build_model(num_classes=3, weights=str(tmp_path / "junk.pth"))


# --------------------------------------------------------------------------- data


def test_split_is_stratified_and_seeded():
    labels = [0] * 12 + [1] * 8 + [2] * 4
    train, val = T.split_stratified(labels, 0.25, seed=3)
    assert sorted(train + val) == list(range(len(labels)))
    assert [sum(labels[i] == c for i in val) for c in range(3)] == [3, 2, 1]
    assert T.split_stratified(labels, 0.25, seed=3) == (train, val)
    assert T.split_stratified(labels, 0.25, seed=4) != (train, val)
    with pytest.raises(DatasetError, match="at least two"):
        T.split_stratified([0, 0, 1], 0.25, seed=0)


def test_bad_datasets_are_refused_with_reasons(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        T.load_data(tmp_path / "missing", cfg())
    one = make_image_folder(tmp_path / "one", per_class=3, classes=("only",))
    with pytest.raises(DatasetError, match="at least two"):
        T.load_data(one, cfg())
    empty = make_image_folder(tmp_path / "empty", per_class=3, classes=("a", "b"))
    (empty / "c").mkdir()
    (empty / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"\['c'\]"):
        T.load_data(empty, cfg())
    single = make_image_folder(tmp_path / "single", per_class=3, classes=("a", "b"))
    for p in sorted((single / "b").iterdir())[1:]:
        p.unlink()
    with pytest.raises(DatasetError, match="at least two"):
        T.load_data(single, cfg())


def test_corrupt_images_are_skipped_and_reported(tmp_path, caplog):
    root = make_image_folder(tmp_path / "ds", per_class=3, classes=("a", "b"))
    before = T.load_data(root, cfg()).summary.sha256
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("ignored")
    (root / "manifest.jsonl").write_text("{}\n")
    (root / "b" / ".003.png.tmp").write_bytes(b"half-written")
    with caplog.at_level(logging.WARNING, logger="dli_perception.core.training"):
        data = T.load_data(root, cfg())
    summary = data.summary
    assert summary.counts == {"a": 3, "b": 3}
    assert sorted(s["file"] for s in summary.skipped) == ["a/broken.jpg", "b/empty.png"]
    assert summary.ignored_files == 1
    assert summary.sha256 == before  # unreadable and non-image files do not change the content hash
    assert "a/broken.jpg" in caplog.text and "2 of 8 image files" in caplog.text
    assert len(data.train) + len(data.val) == 6
    cv2.imwrite(str(root / "a" / "000.png"), np.zeros((64, 64, 3), np.uint8))
    assert T.load_data(root, cfg()).summary.sha256 != before


def test_augmentation_is_seeded_and_keeps_the_input_size():
    rng = np.random.default_rng(0)
    image = cv2.cvtColor(draw(0, rng, size=96), cv2.COLOR_BGR2RGB)[:, :80]  # not square
    pre = PreprocessConfig(size=64)
    c = cfg(color_jitter=0.3)
    a = T.augment_image(image, pre, c, np.random.default_rng(1))
    b = T.augment_image(image, pre, c, np.random.default_rng(1))
    other = T.augment_image(image, pre, c, np.random.default_rng(2))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, other)
    assert not np.array_equal(a, resize(image, pre))
    full = cfg(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter=0.0)
    assert np.array_equal(T.augment_image(image, pre, full, np.random.default_rng(0)), resize(image, pre))


def test_train_config_validates_and_round_trips():
    c = cfg(mode="head-then-finetune", epochs=4, max_images_per_class=0)
    assert c.max_images_per_class is None and c.resolved_head_epochs == 2
    assert T.TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="mode"):
        cfg(mode="linear")
    with pytest.raises(ConfigError, match="unknown training options"):
        T.TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="val_fraction"):
        cfg(val_fraction=0.0)


def test_train_with_imagenet_weights_missing_fails_before_training(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError):
        T.train(dataset, cfg(weights="imagenet"))


# --------------------------------------------------------------------------- training


def test_head_mode_computes_features_once_and_learns(dataset):
    events: list[T.ProgressEvent] = []
    with BackboneImages() as cached:
        result = T.train(dataset, cfg(epochs=20), on_progress=events.append)
    assert cached.images == 3 * PER_CLASS  # every image through the backbone once, then never again
    assert result.status == "completed" and len(result.history) == 20
    assert result.best_val_acc >= 0.8  # chance is 1/3
    assert result.classes == list(CLASSES)
    assert np.asarray(result.confusion).sum() == 9 and len(result.per_class) == 3
    assert result.timings["features_s"] > 0 and "head" in result.timings["epoch_mean_s"]
    assert not any(p.requires_grad is False for p in result.model.parameters())
    assert not result.model.training and next(result.model.parameters()).device.type == "cpu"
    phases = {e.phase for e in events}
    assert {"load", "features", "train", "val", "epoch", "done"} <= phases
    assert all(1 <= e.batch <= e.batches for e in events if e.phase in ("features", "train", "val"))
    assert any(e.eta_s is not None and e.eta_s > 0 for e in events if e.phase == "train")
    assert events[-1].phase == "done" and events[-1].eta_s == 0.0

    with BackboneImages() as uncached:
        slow = T.train(dataset, cfg(epochs=2, feature_cache=False))
    assert uncached.images == 2 * 3 * PER_CLASS  # the backbone runs on every image every epoch
    assert slow.timings["features_s"] == 0.0 and len(slow.history) == 2


def test_augmented_feature_views_sampler_sgd_and_step_schedule(dataset):
    config = cfg(epochs=3, feature_views=2, class_balance="sampler", optimizer="sgd", schedule="step")
    with BackboneImages() as seen:
        result = T.train(dataset, config)
    assert seen.images == 2 * 27 + 9  # two views of the training images, one of the validation images
    assert [h.lr for h in result.history] == pytest.approx([0.05, 0.005, 0.0005])
    assert result.status == "completed" and len(result.history) == 3


def test_max_images_per_class_subsamples_deterministically(dataset):
    a = T.load_data(dataset, cfg(max_images_per_class=5))
    b = T.load_data(dataset, cfg(max_images_per_class=5))
    assert {c: a.summary.train_counts[c] + a.summary.val_counts[c] for c in CLASSES} == dict.fromkeys(CLASSES, 5)
    assert (a.train, a.val) == (b.train, b.val)
    assert a.summary.counts == dict.fromkeys(CLASSES, PER_CLASS)  # what the folder holds


def test_finetune_trains_every_layer_with_a_lower_backbone_lr(dataset, tmp_path):
    start = torchvision.models.resnet18()
    weights = tmp_path / "start.pth"
    torch.save(start.state_dict(), weights)
    result = T.train(dataset, cfg(mode="finetune", epochs=1, lr=0.003, weights=str(weights)))
    assert [h.stage for h in result.history] == ["finetune"]
    assert result.history[0].backbone_lr == pytest.approx(0.0003)
    assert not torch.equal(result.model.conv1.weight, start.conv1.weight)
    assert not torch.equal(result.model.layer4[1].conv2.weight, start.layer4[1].conv2.weight)
    assert result.weights.source == "file" and result.weights.head_adapted


def test_early_stopping_ends_the_run(dataset, tmp_path):
    result = T.train(dataset, cfg(epochs=40, early_stop_patience=3), checkpoint_dir=tmp_path)
    assert result.status == "early_stopped"
    accs = [h.val_acc for h in result.history]
    last_gain = max(i for i, a in enumerate(accs) if a > max(accs[:i], default=-1.0))
    assert len(accs) == last_gain + 1 + 3 < 40
    best = T.load_training_checkpoint(tmp_path / T.BEST_CHECKPOINT)
    assert best["epoch"] == result.best_epoch and result.checkpoint_path == str(tmp_path / T.BEST_CHECKPOINT)
    again = T.result_from_checkpoint(tmp_path / T.BEST_CHECKPOINT)  # what `export` of a best.pt sees
    assert (again.best_epoch, again.best_val_acc, again.confusion) == (
        result.best_epoch,
        result.best_val_acc,
        result.confusion,
    )
    assert len(again.history) == result.best_epoch and again.config == result.config
    state, again_state = result.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(state[k], again_state[k]) for k in state)


def test_cancel_keeps_best_checkpoint_and_resume_matches_an_uninterrupted_run(dataset, tmp_path):
    config = cfg(mode="head-then-finetune", epochs=3, head_epochs=1, lr=0.01)
    full = T.train(dataset, config)  # no checkpoints: writing them must not change the run

    cancel = threading.Event()
    seen: dict[str, object] = {}

    def on_progress(event: T.ProgressEvent) -> None:
        if event.phase == "train" and event.epoch == 3 and event.batch == 2 and not cancel.is_set():
            seen["best"] = sha(tmp_path / "cut" / T.BEST_CHECKPOINT)
            seen["last"] = sha(tmp_path / "cut" / T.LAST_CHECKPOINT)
            cancel.set()

    cut = T.train(dataset, config, checkpoint_dir=tmp_path / "cut", cancel=cancel, on_progress=on_progress)
    assert cut.cancelled and [h.epoch for h in cut.history] == [1, 2]
    assert sha(tmp_path / "cut" / T.BEST_CHECKPOINT) == seen["best"]
    assert sha(tmp_path / "cut" / T.LAST_CHECKPOINT) == seen["last"]
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [T.BEST_CHECKPOINT, T.LAST_CHECKPOINT]
    assert T.load_training_checkpoint(tmp_path / "cut" / T.BEST_CHECKPOINT)["epoch"] == cut.best_epoch
    for a, b in zip(cut.history, full.history, strict=False):  # same seed, same epochs
        assert (a.train_loss, a.val_loss, a.val_acc) == (b.train_loss, b.val_loss, b.val_acc)

    resumed = T.train(dataset, config, checkpoint_dir=tmp_path / "cut", resume=tmp_path / "cut" / T.LAST_CHECKPOINT)
    assert resumed.status == full.status and resumed.best_epoch == full.best_epoch
    assert [h.stage for h in resumed.history] == ["head", "finetune", "finetune"]
    for a, b in zip(resumed.history, full.history, strict=True):
        assert (a.epoch, a.train_loss, a.train_acc, a.val_loss, a.val_acc, a.lr) == (
            b.epoch,
            b.train_loss,
            b.train_acc,
            b.val_loss,
            b.val_acc,
            b.lr,
        )
    assert resumed.confusion == full.confusion
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)


def test_resume_from_inside_the_head_stage_matches_an_uninterrupted_run(dataset, tmp_path):
    """Cut during the head stage (trained on cached features), resumed: the same epochs, losses and weights."""
    config = cfg(mode="head-then-finetune", epochs=4, head_epochs=3, lr=0.01)
    full = T.train(dataset, config)
    cancel = threading.Event()

    def on_progress(event: T.ProgressEvent) -> None:
        if event.phase == "train" and event.epoch == 3 and event.batch == 1:
            cancel.set()

    cut = T.train(dataset, config, checkpoint_dir=tmp_path / "cut", cancel=cancel, on_progress=on_progress)
    assert cut.cancelled and [(h.epoch, h.stage) for h in cut.history] == [(1, "head"), (2, "head")]
    resumed = T.train(dataset, config, checkpoint_dir=tmp_path / "cut", resume=tmp_path / "cut" / T.LAST_CHECKPOINT)
    assert [h.stage for h in resumed.history] == ["head", "head", "head", "finetune"]
    for a, b in zip(resumed.history, full.history, strict=True):
        assert (a.epoch, a.train_loss, a.val_loss, a.val_acc, a.lr) == (
            b.epoch,
            b.train_loss,
            b.val_loss,
            b.val_acc,
            b.lr,
        )
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)


def test_resume_refuses_a_checkpoint_of_other_classes(dataset, tmp_path):
    T.train(dataset, cfg(epochs=1), checkpoint_dir=tmp_path / "ck")
    other = make_image_folder(tmp_path / "other", per_class=3, classes=("x", "y"))
    with pytest.raises(TrainingError, match="same classes"):
        T.train(other, cfg(epochs=2), resume=tmp_path / "ck" / T.LAST_CHECKPOINT)
    with pytest.raises(TrainingError, match="does not exist"):
        T.train(dataset, cfg(epochs=2), resume=tmp_path / "nothing.pt")


@pytest.mark.parametrize("class_weight", [None, (1.0, 2.0, 0.5)])
def test_micro_batches_take_the_same_step_as_the_whole_batch(class_weight):
    """Fine-tuning's micro-batches (peak memory) sum to the whole batch's gradient, class weights included."""
    import torch

    from dli_perception.core.training import _parts, train_one_epoch

    assert _parts(9, 8) == [slice(0, 4), slice(4, 9)]  # never a part of one image (batch norm)
    assert _parts(16, 8) == [slice(0, 8), slice(8, 16)] and _parts(8, 8) == [slice(None)]
    weight = torch.tensor(class_weight) if class_weight else None
    x = torch.randn(9, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 0])

    def step(micro: int):
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3)
        )
        before = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        criterion = torch.nn.CrossEntropyLoss(weight=weight)
        loss, acc = train_one_epoch(net, [(x, y)], criterion, opt, device=torch.device("cpu"), micro_batch=micro)
        return loss, acc, [p.detach().clone() for p in net.parameters()], before

    whole, parts = step(0), step(4)
    assert parts[0] == pytest.approx(whole[0], rel=1e-6) and parts[1] == whole[1]
    for a, b in zip(whole[2], parts[2], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(whole[3][-2], whole[2][-2], atol=1e-4)  # the step moved the weights
