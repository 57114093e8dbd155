"""Data-parallel training with ``torch.distributed`` (DDP), for processes started by torchrun.

Every process (rank) reads the dataset itself, checks with the others that all read the same
files and made the same seeded split, then trains a replica of the model on its share of each
epoch: the training order of an epoch is drawn from the seed exactly as in a single-process run
and cut into ranks with :class:`torch.utils.data.DistributedSampler`; gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`. ``TrainConfig.batch_size`` stays the batch of
one optimiser step: each of N ranks takes ``batch_size // N`` images of it, so ``--nproc`` changes
the speed, not the recipe. Validation is split across ranks and its sums are all-reduced, so every
rank sees the same metrics and takes the same early-stopping decision. In head mode the frozen
backbone's features are computed once, each rank a slice, and all-gathered.

Only rank 0 writes checkpoints, the report and the model directory; the others wait for its
verdict, so every rank ends with the same outcome. The process group has a timeout (a rank that
stops answering ends the run with an error instead of a hang) and is destroyed on every exit path.

Backend: ``nccl`` when CUDA is used (one GPU per local rank), ``gloo`` on the CPU.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import gc
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core import training as T
from dli_perception.errors import ConfigError, DistributedError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_TIMEOUT_S = 600.0
"""Longest wait in one collective: covers rank 0 writing checkpoints and exporting while the others wait."""


@dataclass
class DistContext:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: Any
    host: str
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return (
            f"rank {self.rank}/{self.world_size} (pid {os.getpid()}, host {self.host}, local rank "
            f"{self.local_rank}): {self.backend} on {self.device}"
        )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def port_in_use(port: int, host: str = "") -> bool:
    """True when a TCP listener cannot bind ``host:port`` here (something else holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, int(port)))
        except OSError as err:
            return err.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def port_message(port: int | str, host: str = "") -> str:
    where = f"{host}:{port}" if host else f"port {port}"
    return (
        f"{where} is in use (another training run or program listens there); choose another with "
        f"--master-port PORT (e.g. --master-port {int(port) + 1}) or stop the program holding it "
        f"(`ss -ltnp | grep {port}` shows it)"
    )


def init(timeout_s: float = DEFAULT_TIMEOUT_S, backend: str = "auto", device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...).

    ``backend`` ``auto`` is ``nccl`` when the run uses CUDA, else ``gloo``. Raises
    :class:`DistributedError` when the variables are missing, the master port is taken, or the
    other ranks do not arrive within ``timeout_s``.
    """
    import torch
    import torch.distributed as dist

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if rank is None or world is None:
        raise DistributedError(
            "RANK and WORLD_SIZE are not set: start this module with torchrun "
            "(torchrun --nproc-per-node N -m dli_perception.train ...) or use dli-perception train --nproc N"
        )
    local_rank = _env_int("LOCAL_RANK") or 0
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"local rank {local_rank} has no GPU of its own (this node has {torch.cuda.device_count()}); "
                "start at most one process per GPU (--nproc)"
            )
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    master = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=_dt.timedelta(seconds=float(timeout_s)),
            **({"device_id": dev} if use_cuda else {}),
        )
    except Exception as err:  # noqa: BLE001 - torch raises several types; all mean "cannot start"
        text = " ".join(str(err).split())
        if "EADDRINUSE" in text or "address already in use" in text.lower():
            raise DistributedError(port_message(os.environ.get("MASTER_PORT", "?"))) from None
        raise DistributedError(
            f"rank {rank} could not join the process group at {master} ({backend}): {text[:400]}"
        ) from None
    return DistContext(rank, world, local_rank, backend, dev, socket.gethostname(), float(timeout_s))


def shutdown() -> None:
    """Destroy the process group if one exists (safe on every exit path, twice included)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


@contextlib.contextmanager
def process_group(
    timeout_s: float = DEFAULT_TIMEOUT_S, backend: str = "auto", device: str = "auto"
) -> Iterator[DistContext]:
    """:func:`init` on entry, :func:`shutdown` on every exit."""
    ctx = init(timeout_s, backend, device)
    try:
        yield ctx
    finally:
        shutdown()


def lost_peer_error(ctx: DistContext, err: BaseException, checkpoint_dir: Path | None) -> DistributedError:
    """The error a rank raises when a collective failed: another rank died, hung or was stopped."""
    text = " ".join(str(err).split())[:300]
    where = f"; checkpoints of completed epochs are in {checkpoint_dir}" if checkpoint_dir else ""
    return DistributedError(
        f"rank {ctx.rank} lost contact with the other ranks ({text}): another rank failed, was killed or "
        f"stopped answering for {ctx.timeout_s:g} s (see its message); nothing was exported{where}"
    )


def is_collective_failure(err: BaseException) -> bool:
    """True for the errors torch.distributed raises when a peer disappears or a collective times out."""
    import torch.distributed as dist

    kinds = tuple(k for k in (getattr(dist, "DistError", None),) if k is not None)
    if kinds and isinstance(err, kinds):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        key in text for key in ("connection closed", "connection reset", "timed out", "timeout", "gloo", "nccl", "peer")
    )


# --------------------------------------------------------------------------- collectives


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled)."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(local: torch.Tensor, total: int, ctx: DistContext) -> torch.Tensor:
    """Rows ``rank, rank + W, ...`` of each rank (as :func:`shard` cut them) back into one ``total``-row tensor."""
    import torch
    import torch.distributed as dist

    world = ctx.world_size
    longest = math.ceil(total / world)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for r, part in enumerate(parts):
        n = len(range(r, total, world))
        out[r::world] = part[:n]
    return out


def shard(n: int, ctx: DistContext) -> list[int]:
    """Indices of ``n`` items this rank handles alone (no padding): ``rank, rank + W, ...``."""
    return list(range(ctx.rank, n, ctx.world_size))


# --------------------------------------------------------------------------- dataset check


def data_fingerprint(data: T.TrainData, root: str | os.PathLike) -> dict[str, Any]:
    """What every rank must agree on: the dataset's content hash, classes and the seeded split."""
    base = Path(root).expanduser()

    def rel(path: str) -> str:
        with contextlib.suppress(ValueError):
            return Path(path).relative_to(base).as_posix()
        return Path(path).name

    split = json.dumps(
        {"train": [(rel(p), y) for p, y in data.train], "val": [(rel(p), y) for p, y in data.val]},
        separators=(",", ":"),
    )
    return {
        "host": socket.gethostname(),
        "root": data.summary.root,
        "images": data.summary.num_images,
        "classes": list(data.classes),
        "sha256": data.summary.sha256,
        "split": hashlib.sha256(split.encode("utf-8")).hexdigest(),
    }


def check_same_data(ctx: DistContext, data: T.TrainData, root: str | os.PathLike) -> None:
    """Compare every rank's :func:`data_fingerprint`; :class:`DistributedError` on every rank if they differ."""
    mine = data_fingerprint(data, root)
    prints = all_gather_object(mine)
    keys = ("classes", "sha256", "split")
    if all(all(p[k] == prints[0][k] for k in keys) for p in prints):
        return
    rows = "; ".join(
        f"rank {r} on {p['host']}: {p['root']} ({p['images']} images, {len(p['classes'])} classes, "
        f"sha256 {p['sha256'][:12]}, split {p['split'][:12]})"
        for r, p in enumerate(prints)
    )
    raise DistributedError(
        f"the dataset differs between ranks: {rows}. Every node must hold the same files (copy it with "
        "rsync, or put it on a shared filesystem) and get the same --seed/--val-fraction; nothing was trained"
    )


def check_resume_visible(ctx: DistContext, resume: Path | None) -> None:
    """Every rank reads the resume checkpoint itself: refuse, on every rank, when one cannot see it."""
    if resume is None:
        return
    seen = all_gather_object((socket.gethostname(), resume.is_file()))
    missing = [f"rank {r} on {host}" for r, (host, ok) in enumerate(seen) if not ok]
    if missing:
        raise DistributedError(
            f"--resume {resume} is not readable by {', '.join(missing)}; every node needs the checkpoint "
            "(and best.pt beside it) at that path: use a shared filesystem or copy it there"
        )


# --------------------------------------------------------------------------- the run


class DistributedRun(T._Run):
    """:class:`~dli_perception.core.training._Run` whose epochs, validation and feature cache are split across ranks."""

    def __init__(
        self, ctx: DistContext, data: T.TrainData, config: T.TrainConfig, cancel: Any, on_progress: Any
    ) -> None:
        super().__init__(data, config, cancel, on_progress)
        self.ctx = ctx
        self.device = ctx.device
        self.batch_size = max(1, config.batch_size // ctx.world_size)
        if self.batch_size * ctx.world_size != config.batch_size:
            logger.warning(
                "batch size %d does not split into %d processes: each takes %d (a step sees %d images)",
                config.batch_size,
                ctx.world_size,
                self.batch_size,
                self.batch_size * ctx.world_size,
            )
        self.timings.update(world_size=ctx.world_size, backend=ctx.backend, batch_per_rank=self.batch_size)
        self._ddp: tuple[int, str, Any] | None = None
        self._positions: list[int] = []

    # -- the epoch's samples
    def epoch_order(self, epoch: int) -> list[int]:
        from torch.utils.data import DistributedSampler

        per_rank, self.batch_size = self.batch_size, self.cfg.batch_size
        try:  # the single-process order, trimmed by the single-process batch rule
            full = super().epoch_order(epoch)
        finally:
            self.batch_size = per_rank
        sampler = DistributedSampler(
            full, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=False, drop_last=False
        )
        positions = list(sampler)
        if len(positions) > 1 and len(positions) % self.batch_size == 1 and not self.cached(self.stage):
            positions = positions[:-1]  # same length on every rank: a batch of one breaks batch norm
        self._positions = positions
        self._full_len = len(full)
        return [full[i] for i in positions]

    def loader(self, samples: Sequence[T.Sample], order: Sequence[int] | None, augment: bool, epoch: int):
        if order is None:  # validation and feature extraction: each rank a disjoint slice
            order = shard(len(samples), self.ctx)
        return super().loader(samples, order, augment, epoch)

    def remaining(self, epoch: int, phase: str, done: int) -> dict[str, int]:
        world = self.ctx.world_size
        return {k: math.ceil(v / world) for k, v in super().remaining(epoch, phase, done).items()}

    # -- modules
    def train_net(self, net: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        key = (id(net), self.stage)
        if self._ddp is None or self._ddp[:2] != key:
            self._ddp = None
            gc.collect()  # the previous wrapper's gradient hooks go with it
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = (*key, DistributedDataParallel(net, device_ids=ids))
        return self._ddp[2]

    def eval_net(self, net: torch.nn.Module) -> torch.nn.Module:
        import torch.distributed as dist

        for buf in net.buffers():  # batch-norm statistics: every rank validates rank 0's model
            dist.broadcast(buf, src=0)
        return net

    def run_epoch(self, model: torch.nn.Module, epoch: int, best_acc: float) -> tuple[float, float, T.EvalResult]:
        import torch
        import torch.distributed as dist

        train_loss, train_acc, val = super().run_epoch(model, epoch, best_acc)
        sums = torch.tensor([train_loss, train_acc, val.loss * val.count, val.count], dtype=torch.float64)
        confusion = torch.as_tensor(val.confusion, dtype=torch.int64)
        if self.ctx.backend == "nccl":
            sums, confusion = sums.to(self.device), confusion.to(self.device)
        dist.all_reduce(sums)
        dist.all_reduce(confusion)
        sums, confusion_np = sums.cpu().tolist(), confusion.cpu().numpy()
        world, count = self.ctx.world_size, int(sums[3])
        merged = T.EvalResult(
            loss=sums[2] / count,
            accuracy=float(np.trace(confusion_np)) / count,
            confusion=confusion_np,
            count=count,
        )
        return sums[0] / world, sums[1] / world, merged

    # -- head-mode feature cache, computed in slices
    def build_feature_cache(self, model: torch.nn.Module) -> None:
        import torch

        cfg, ctx = self.cfg, self.ctx
        t0 = time.perf_counter()
        n_train, n_val = len(self.data.train), len(self.data.val)
        total = math.ceil(n_train / self.batch_size / ctx.world_size) * cfg.feature_views
        total += math.ceil(n_val / self.batch_size / ctx.world_size)
        done = {"batches": 0}

        def on_batch(i: int, _loss: float, _acc: float, n: int) -> None:
            done["batches"] += 1
            self.emit(
                T.ProgressEvent(
                    "features",
                    self.current_epoch,
                    cfg.epochs,
                    done["batches"],
                    total,
                    stage="head",
                    message=f"caching backbone features ({ctx.world_size} processes)",
                )
            )

        def features(samples: Sequence[T.Sample], augment: bool, epoch: int) -> torch.Tensor:
            part, _ = T.extract_features(
                model,
                cfg.backbone,
                self.loader(samples, None, augment, epoch),
                device=self.device,
                amp=self.amp,
                cancel=None,
                on_batch=on_batch,
            )
            return gather_rows(part.to(self.device), len(samples), ctx)

        views = [features(self.data.train, view > 0, 1_000_000 + view) for view in range(cfg.feature_views)]
        val_f = features(self.data.val, False, 0)
        self.features = {
            "train": torch.stack(views).to(self.device),
            "train_y": torch.as_tensor(self.train_labels).to(self.device),
            "val": val_f,
            "val_y": torch.as_tensor([y for _, y in self.data.val], dtype=torch.long).to(self.device),
        }
        self.timings["features_s"] += time.perf_counter() - t0
        logger.info(
            "cached %d feature vectors on %d ranks in %.2f s", n_train + n_val, ctx.world_size, time.perf_counter() - t0
        )

    def feature_batches(self, order: Sequence[int], epoch: int) -> Iterator[tuple[Any, Any]]:
        assert self.features is not None
        views = None
        if self.cfg.feature_views > 1:  # the views the single-process run draws for the same positions
            views = T.epoch_views(self.cfg.seed, epoch, self.cfg.feature_views, self._full_len)[self._positions]
        return T.feature_train_batches(self.features, order, self.batch_size, self.device, views)

    def val_feature_batches(self) -> Iterator[tuple[Any, Any]]:
        f = self.features
        assert f is not None
        mine = shard(len(f["val_y"]), self.ctx)
        for start in range(0, len(mine), self.batch_size):
            rows = mine[start : start + self.batch_size]
            yield f["val"][rows], f["val_y"][rows]


def train_distributed(
    ctx: DistContext,
    dataset: str | os.PathLike,
    config: T.TrainConfig,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    on_progress: T.ProgressCallback | None = None,
) -> T.TrainResult:
    """Train on ``dataset`` as rank ``ctx.rank`` of a data-parallel run; every rank calls this.

    Only rank 0 uses ``checkpoint_dir`` and ``on_progress`` (pass them everywhere; the others
    ignore them). Raises :class:`DistributedError` on every rank when the ranks' datasets or
    splits differ, when the validation split has fewer images than there are ranks, or when a
    rank cannot read the resume checkpoint, or for a regression or multilabel dataset; otherwise like :func:`~dli_perception.core.training.train`.
    """
    if config.device == "auto":
        config = replace(config, device=ctx.device.type)
    data = T.load_data(dataset, config)
    if data.task != "classification":
        raise DistributedError(
            f"data-parallel training runs classification only; {dataset} is a {data.task} dataset: "
            "train it in one process (without --nproc)"
        )
    check_same_data(ctx, data, dataset)
    if len(data.val) < ctx.world_size:
        raise DistributedError(
            f"the validation split has {len(data.val)} images, fewer than the {ctx.world_size} processes; "
            "use fewer processes (--nproc) or more images"
        )
    resume_path = Path(resume).expanduser() if resume is not None else None
    check_resume_visible(ctx, resume_path)
    main = ctx.is_main

    def factory(data: T.TrainData, cfg: T.TrainConfig, cancel: Any, progress: Any) -> DistributedRun:
        return DistributedRun(ctx, data, cfg, cancel, progress)

    return T.train(
        data,
        config,
        checkpoint_dir=checkpoint_dir if main else None,
        resume=resume_path,
        on_progress=on_progress if main else None,
        run_factory=factory,
    )
