"""The state of one training run: device, stages, optimiser, data loaders, feature cache and time estimates.

:class:`_Run` is what :func:`dli_perception.core.training.train` drives epoch by epoch;
:mod:`dli_perception.core.distributed` subclasses it to split the work across ranks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.training.backbones import get_head
from dli_perception.core.training.config import TrainConfig
from dli_perception.core.training.data import ImageSamples
from dli_perception.core.training.features import epoch_views, extract_features, feature_train_batches
from dli_perception.core.training.results import EvalResult, ProgressCallback, ProgressEvent
from dli_perception.core.training.samples import Sample, TrainData
from dli_perception.core.training.steps import FINETUNE_MICRO_BATCH, evaluate, train_one_epoch
from dli_perception.core.training.targets import TaskHead
from dli_perception.errors import ConfigError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def _mix(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _resolve_device(name: str) -> torch.device:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch.cuda.is_available() is False; use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if enabled:
            torch.use_deterministic_algorithms(before, warn_only=warn_only)


class _Eta:
    """Seconds per image of each kind of work, to estimate the time left."""

    # Cost of one image relative to a forward pass; used for kinds not timed yet.
    FACTORS: ClassVar[dict[str, float]] = {
        "features": 1.0,
        "val_head": 1.0,
        "val_finetune": 1.0,
        "train_head": 1.2,
        "train_finetune": 3.0,
        "train_head_cached": 0.0,
        "val_head_cached": 0.0,
    }

    def __init__(self) -> None:
        self.rate: dict[str, float] = {}

    def observe(self, kind: str, seconds: float, images: int) -> None:
        if images <= 0:
            return
        r = seconds / images
        old = self.rate.get(kind)
        self.rate[kind] = r if old is None else 0.8 * old + 0.2 * r

    def per_image(self, kind: str) -> float | None:
        if kind in self.rate:
            return self.rate[kind]
        factor = self.FACTORS.get(kind, 1.0)
        if factor == 0.0:
            return 0.0
        bases = [self.rate[k] / f for k, f in self.FACTORS.items() if k in self.rate and f > 0]
        return factor * bases[0] if bases else None

    def estimate(self, work: Mapping[str, int]) -> float | None:
        total = 0.0
        for kind, images in work.items():
            if images <= 0:
                continue
            r = self.per_image(kind)
            if r is None:
                return None
            total += r * images
        return total


class _Run:
    """State of one :func:`train` call (model, stage, optimiser, feature cache, bookkeeping)."""

    def __init__(
        self,
        data: TrainData,
        config: TrainConfig,
        cancel: threading.Event | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        import torch

        self.data = data
        self.cfg = config
        self.cancel = cancel
        self.on_progress = on_progress
        self.device = _resolve_device(config.device)
        self.amp = self.device.type == "cuda" and config.amp in ("auto", "on")
        if config.amp == "on" and not self.amp:
            logger.warning("amp='on' needs CUDA; training in float32 on %s", self.device)
        self.num_classes = len(data.classes)
        self.batch_size = config.batch_size  # per process: a distributed run splits the batch
        self.task = data.task
        self.train_targets = data.targets(data.train)
        self.head = TaskHead(data.task, list(data.classes), self.train_targets, config.class_balance, config.loss)
        self.train_labels = (
            self.train_targets if data.task == tasks.CLASSIFICATION else np.zeros(len(data.train), dtype=np.int64)
        )
        self.finetune_start = config.resolved_head_epochs + 1
        self.stage = ""
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.scaler: Any = torch.amp.GradScaler("cuda") if self.amp else None
        self.features: dict[str, Any] | None = None
        self.eta = _Eta()
        self.callback_failed = False
        counts = np.bincount(self.train_labels, minlength=1).astype(np.float64)
        self.criterion = self.head.criterion(self.device)
        self.sample_prob = (1.0 / counts)[self.train_labels]
        self.sample_prob /= self.sample_prob.sum()
        self.timings: dict[str, Any] = {
            "features_s": 0.0,
            "checkpoint_s": 0.0,
            "device": str(self.device),
            "amp": self.amp,
            "feature_cache": config.feature_cache,
        }

    # -- helpers
    def event(
        self,
        phase: str,
        epoch: int,
        *,
        running: float | None = None,
        val_score: float | None = None,
        best: float | None = None,
        **fields: Any,
    ) -> ProgressEvent:
        """A progress event with the task's figures: ``running`` is the phase's running batch figure (accuracy,
        mean error, exact-match ratio), ``val_score``/``best`` internal scores (higher is better)."""
        head = self.head
        best_metric = head.metric_of(best) if best is not None and math.isfinite(best) else None
        val_metric = head.metric_of(val_score) if val_score is not None else None
        cls = self.task == tasks.CLASSIFICATION
        return ProgressEvent(
            phase,
            epoch,
            self.cfg.epochs,
            accuracy=None if self.task == tasks.REGRESSION else running,
            val_accuracy=val_metric if cls else None,
            best_val_accuracy=best_metric if cls else None,
            task=self.task,
            metric_name=head.metric_name,
            metric=running if self.task != tasks.MULTILABEL else None,
            val_metric=val_metric,
            best_val_metric=best_metric,
            **fields,
        )

    def emit(self, event: ProgressEvent) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(event)
        except Exception:
            if not self.callback_failed:
                logger.exception("progress callback failed; training continues without reporting this")
            self.callback_failed = True

    def stage_of(self, epoch: int) -> str:
        return "head" if epoch < self.finetune_start else "finetune"

    def cached(self, stage: str) -> bool:
        return stage == "head" and self.cfg.feature_cache

    def kind(self, what: str, stage: str) -> str:
        return f"{what}_{stage}" + ("_cached" if self.cached(stage) else "")

    def remaining(self, epoch: int, phase: str, done: int) -> dict[str, int]:
        """Images of work left from a point inside ``epoch`` (``phase`` with ``done`` images done)."""
        n_train, n_val = len(self.data.train), len(self.data.val)
        work: dict[str, int] = {}

        def add(kind: str, n: int) -> None:
            work[kind] = work.get(kind, 0) + max(0, n)

        stage = self.stage_of(max(epoch, 1))
        if phase == "features":
            add("features", (n_train * self.cfg.feature_views + n_val) - done)
        elif phase == "train":
            add(self.kind("train", stage), n_train - done)
            add(self.kind("val", stage), n_val)
        elif phase == "val":
            add(self.kind("val", stage), n_val - done)
        features_pending = self.features is None and phase != "features"
        for e in range(max(epoch, 0) + 1, self.cfg.epochs + 1):
            s = self.stage_of(e)
            if self.cached(s) and features_pending:
                add("features", n_train * self.cfg.feature_views + n_val)
                features_pending = False
            add(self.kind("train", s), n_train)
            add(self.kind("val", s), n_val)
        return work

    def loader(self, samples: Sequence[Sample], order: Sequence[int] | None, augment: bool, epoch: int):
        import torch

        dataset = ImageSamples(
            samples, self.cfg.preprocess, self.cfg if augment else None, seed=self.cfg.seed, task=self.task
        )
        dataset.epoch = epoch
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=list(order) if order is not None else None,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    def epoch_order(self, epoch: int) -> list[int]:
        """Training sample order of ``epoch``: weighted draw (``sampler``) or a permutation."""
        rng = np.random.default_rng([self.cfg.seed, 4, epoch])
        n = len(self.data.train)
        if self.cfg.class_balance == "sampler":
            order = rng.choice(n, size=n, replace=True, p=self.sample_prob).tolist()
        else:
            order = rng.permutation(n).tolist()
        if len(order) > 1 and len(order) % self.batch_size == 1:
            order = order[:-1]  # a batch of one breaks batch norm in training mode
        return order

    # -- stages
    def setup_stage(self, model: torch.nn.Module, stage: str, ckpt: Mapping[str, Any] | None) -> None:
        import torch

        cfg = self.cfg
        head = get_head(model, cfg.backbone)
        head_ids = {id(p) for p in head.parameters()}
        backbone_params = [p for p in model.parameters() if id(p) not in head_ids]
        if stage == "head":
            model.eval()  # frozen backbone: batch norm keeps its statistics
            for p in backbone_params:
                p.requires_grad_(False)
            for p in head.parameters():
                p.requires_grad_(True)
            groups = [{"params": list(head.parameters()), "lr": cfg.lr, "name": "head"}]
            stage_epochs = self.finetune_start - 1
        else:
            self.features = None
            model.train()
            for p in model.parameters():
                p.requires_grad_(True)
            groups = [
                {"params": backbone_params, "lr": cfg.lr * cfg.backbone_lr_factor, "name": "backbone"},
                {"params": list(head.parameters()), "lr": cfg.lr, "name": "head"},
            ]
            stage_epochs = cfg.epochs - self.finetune_start + 1
        if cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        stage_epochs = max(1, stage_epochs)
        if cfg.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=stage_epochs)
        elif cfg.schedule == "step":
            step = cfg.lr_step_epochs or max(1, stage_epochs // 3)
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=step, gamma=cfg.lr_gamma)
        else:
            self.scheduler = None
        if ckpt is not None and ckpt.get("stage") == stage:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler") is not None:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            if self.scaler is not None and ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
        self.stage = stage
        logger.info(
            "stage %s: %d trainable parameters",
            stage,
            sum(p.numel() for p in model.parameters() if p.requires_grad),
        )

    def build_feature_cache(self, model: torch.nn.Module) -> None:
        import torch

        cfg = self.cfg
        t0 = time.perf_counter()
        views: list[torch.Tensor] = []
        view_targets: list[torch.Tensor] = []
        n_all = len(self.data.train) * cfg.feature_views + len(self.data.val)
        batches_per_view = math.ceil(len(self.data.train) / self.batch_size)
        total_batches = batches_per_view * cfg.feature_views + math.ceil(len(self.data.val) / self.batch_size)
        state = {"batch0": 0, "done": 0, "t": time.perf_counter()}

        def on_batch(i: int, _loss: float, _acc: float, n: int) -> None:
            now = time.perf_counter()
            self.eta.observe("features", now - state["t"], n)
            state["t"] = now
            state["done"] += n
            self.emit(
                ProgressEvent(
                    "features",
                    self.current_epoch,
                    cfg.epochs,
                    state["batch0"] + i,
                    total_batches,
                    eta_s=self.eta.estimate(self.remaining(self.current_epoch, "features", state["done"])),
                    stage="head",
                    message=f"caching backbone features ({n_all} images)",
                )
            )

        for view in range(cfg.feature_views):
            loader = self.loader(self.data.train, None, augment=view > 0, epoch=1_000_000 + view)
            f, view_y = extract_features(
                model,
                cfg.backbone,
                loader,
                device=self.device,
                amp=self.amp,
                cancel=self.cancel,
                on_batch=on_batch,
            )
            views.append(f)
            view_targets.append(view_y)  # augmented views' targets (a regression flip negates x)
            state["batch0"] += batches_per_view
        val_f, val_y = extract_features(
            model,
            cfg.backbone,
            self.loader(self.data.val, None, False, 0),
            device=self.device,
            amp=self.amp,
            cancel=self.cancel,
            on_batch=on_batch,
        )
        self.features = {
            "train": torch.stack(views).to(self.device),
            "train_y": torch.as_tensor(self.train_targets).to(self.device),
            "val": val_f.to(self.device),
            "val_y": val_y.to(self.device),
        }
        if self.task == tasks.REGRESSION:
            self.features["train_y_views"] = torch.stack(view_targets).to(self.device)
        self.timings["features_s"] += time.perf_counter() - t0
        logger.info("cached %d feature vectors in %.2f s", n_all, time.perf_counter() - t0)

    def feature_batches(self, order: Sequence[int], epoch: int) -> Iterator[tuple[Any, Any]]:
        assert self.features is not None
        views = None
        if self.cfg.feature_views > 1:
            views = epoch_views(self.cfg.seed, epoch, self.cfg.feature_views, len(order))
        return feature_train_batches(self.features, order, self.batch_size, self.device, views)

    def val_feature_batches(self) -> Iterator[tuple[Any, Any]]:
        f = self.features
        assert f is not None
        for start in range(0, len(f["val_y"]), self.batch_size):
            yield (
                f["val"][start : start + self.batch_size],
                f["val_y"][start : start + self.batch_size],
            )

    current_epoch = 0

    def train_net(self, net: torch.nn.Module) -> torch.nn.Module:
        """The module the optimiser steps through (a distributed run wraps it for gradient averaging)."""
        return net

    def eval_net(self, net: torch.nn.Module) -> torch.nn.Module:
        """The module validated after training an epoch (a distributed run first syncs its buffers)."""
        return net

    def run_epoch(self, model: torch.nn.Module, epoch: int, best_acc: float) -> tuple[float, float, EvalResult]:
        import torch

        cfg = self.cfg
        self.current_epoch = epoch
        stage = self.stage
        torch.manual_seed(_mix(cfg.seed, 6, epoch))
        order = self.epoch_order(epoch)
        cached = self.cached(stage)
        if cached:
            net = get_head(model, cfg.backbone)
            train_batches: Iterable[Any] = self.feature_batches(order, epoch)
            val_batches: Iterable[Any] = self.val_feature_batches()
        else:
            net = model
            train_batches = self.loader(self.data.train, order, augment=cfg.augment, epoch=epoch)
            val_batches = self.loader(self.data.val, None, augment=False, epoch=epoch)
        n_train_batches = math.ceil(len(order) / self.batch_size)
        n_val_batches = math.ceil(len(self.data.val) / self.batch_size)
        state = {"t": time.perf_counter(), "done": 0}
        best = best_acc if math.isfinite(best_acc) else None

        def progress(phase: str, batches: int):
            kind = self.kind(phase, stage)

            def on_batch(i: int, loss: float, acc: float, n: int) -> None:
                now = time.perf_counter()
                self.eta.observe(kind, now - state["t"], n)
                state["t"] = now
                state["done"] += n
                eta = self.eta.estimate(self.remaining(epoch, phase, state["done"]))
                self.emit(
                    self.event(
                        phase,
                        epoch,
                        batch=i,
                        batches=batches,
                        loss=loss,
                        running=acc,
                        eta_s=eta,
                        stage=stage,
                        best=best,
                    )
                )

            return on_batch

        train_loss, train_acc = train_one_epoch(
            self.train_net(net),
            train_batches,
            self.criterion,
            self.optimizer,
            device=self.device,
            scaler=self.scaler,
            amp=self.amp,
            cancel=self.cancel,
            on_batch=progress("train", n_train_batches),
            micro_batch=FINETUNE_MICRO_BATCH if stage == "finetune" else 0,
            score=self.head.batch_score,
        )
        state.update(t=time.perf_counter(), done=0)
        result = evaluate(
            self.eval_net(net),
            val_batches,
            self.num_classes,
            device=self.device,
            amp=self.amp,
            cancel=self.cancel,
            on_batch=progress("val", n_val_batches),
            head=self.head,
        )
        return train_loss, train_acc, result
