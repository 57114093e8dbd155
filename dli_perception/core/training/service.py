"""Train, then export a model directory: the one orchestration behind the trainer node and ``dli-perception train``.

A :class:`TrainJob` says what a run trains on and where it writes (built from option values with
:func:`job_from_options`); :func:`train_and_export` checks the pretrained weights before the dataset is
read, trains with checkpoints in ``checkpoint_dir``, and exports ``model_dir`` atomically unless the run
was cancelled. Callers keep only their own surface: the node its topics and thread, the CLI its
progress bar, Ctrl-C and summary.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dli_perception.core.training.config import TrainConfig
from dli_perception.core.training.options import config_from_options
from dli_perception.core.training.results import ProgressCallback, ProgressEvent, TrainResult
from dli_perception.errors import ConfigError, DatasetError

CHECKPOINT_SUFFIX = ".checkpoints"
"""``best.pt``/``last.pt`` go to ``<model_dir>.checkpoints`` unless a checkpoint directory is given."""


def expand(path: str | Path) -> Path:
    """A path option as an absolute path (``~`` expanded, symlinks kept)."""
    return Path(path).expanduser().absolute()


def checkpoint_dir_for(model_dir: str | Path, given: str | Path | None) -> Path:
    """``given`` (``~`` expanded), or ``<model_dir>.checkpoints`` beside the model directory when empty."""
    if given is not None and str(given).strip():
        return Path(given).expanduser()
    model_dir = Path(model_dir).expanduser()
    return model_dir.parent / f"{model_dir.name}{CHECKPOINT_SUFFIX}"


def check_weights(config: TrainConfig) -> None:
    """Fail fast, before the dataset is read, when the pretrained weights cannot be found.

    Raises :class:`~dli_perception.errors.WeightsNotFoundError` (which says where the file must be).
    Imports torch only when the weights are not plainly there.
    """
    from dli_perception.core.training.backbones import build_model, imagenet_weights_path

    weights = config.weights
    if weights.lower() == "none":
        return
    if weights.lower() == "imagenet":
        if config.download_weights or imagenet_weights_path(config.backbone).is_file():
            return
    elif Path(weights).expanduser().is_file():
        return
    build_model(config.backbone, num_classes=2, weights=weights)  # raises with the full explanation


@dataclass
class TrainJob:
    """One run: its options, what it trains on, where it writes and how it is cancelled."""

    config: TrainConfig
    dataset_dir: Path
    model_dir: Path
    checkpoint_dir: Path
    torch_threads: int = 0
    resume: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


def job_from_options(values: Mapping[str, Any]) -> TrainJob:
    """The :class:`TrainJob` of option values (``dataset_dir``, ``model_dir``, ``checkpoint_dir``, ...).

    Raises :class:`ConfigError` for invalid options (``invalid training options: ...``) or a model or
    checkpoint directory inside the dataset, :class:`DatasetError` when the dataset directory does not exist.
    """
    try:
        config = config_from_options(values)
    except ConfigError as exc:
        raise ConfigError(f"invalid training options: {exc}") from exc
    dataset = expand(values["dataset_dir"])
    if not dataset.is_dir():
        raise DatasetError(
            f"dataset_dir {dataset} does not exist; record images first (recorder_node) or set dataset_dir"
        )
    model_dir = expand(values["model_dir"])
    checkpoint_dir = expand(checkpoint_dir_for(model_dir, values.get("checkpoint_dir")))
    real_dataset = dataset.resolve()
    for name, path in (("model_dir", model_dir), ("checkpoint_dir", checkpoint_dir)):
        real = path.resolve()  # through symlinks: where the files would really go
        if real == real_dataset or real_dataset in real.parents:
            raise ConfigError(f"{name} {path} must not be inside dataset_dir {dataset} (it resolves to {real})")
    return TrainJob(
        config=config,
        dataset_dir=dataset,
        model_dir=model_dir,
        checkpoint_dir=checkpoint_dir,
        torch_threads=int(values.get("torch_threads") or 0),
    )


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Let torch use ``threads`` CPU threads inside the block (0: leave torch's setting)."""
    if not threads:
        yield
        return
    if threads < 0:
        raise ConfigError(f"torch threads must be >= 0 (0: torch's default), got {threads}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def training_dataset(job: TrainJob, say: Any = None) -> Iterator[TrainJob]:
    """``job`` itself, or for a road-following folder as it is (``xy_<x>_<y>_<id>.jpg`` files, see
    :func:`~dli_perception.core.dataset.jetbot.is_jetbot_folder`) a copy of ``job`` reading a regression
    dataset imported from it into a temporary directory, removed afterwards.

    The import is deterministic (files in name order), so the split and a resumed run see the same
    images. ``say(text)`` reports what was imported (and what was left out). Use it around training
    AND export: the INT8 variant calibrates on the training images.
    """
    import tempfile

    from dli_perception.core.dataset import DatasetStore
    from dli_perception.core.dataset.jetbot import import_jetbot, is_jetbot_folder

    if not is_jetbot_folder(job.dataset_dir):
        yield job
        return
    with tempfile.TemporaryDirectory(prefix="dli_jetbot_") as tmp:
        root = Path(tmp) / job.dataset_dir.name
        with DatasetStore(root, image_format="png") as store:
            stats = import_jetbot(store, job.dataset_dir, stop_event=job.cancel)
        if say is not None:
            say(f"{job.dataset_dir} is a road-following folder (xy_<x>_<y>_<id>.jpg): {stats.summary()}")
        if not stats.saved:
            raise DatasetError(f"no image of {job.dataset_dir} could be imported: {stats.summary()}")
        yield replace(job, dataset_dir=root)


def train_job(job: TrainJob, *, on_progress: ProgressCallback | None = None) -> TrainResult:
    """Check the pretrained weights (before the dataset is read), then train ``job`` with its checkpoints.

    Raises what :func:`~dli_perception.core.training.train` raises; a cancel while the dataset is read
    raises :class:`~dli_perception.errors.TrainingCancelledError`.
    """
    from dli_perception.core.training.loop import train

    check_weights(job.config)
    return train(
        job.dataset_dir,
        job.config,
        checkpoint_dir=job.checkpoint_dir,
        resume=job.resume,
        cancel=job.cancel,
        on_progress=on_progress,
    )


def export_job(
    job: TrainJob,
    result: TrainResult,
    *,
    on_progress: ProgressCallback | None = None,
    export_cancelled: bool = False,
    **export_options: Any,
) -> bool:
    """Export ``result`` to ``job.model_dir`` (atomically); returns whether it did.

    A cancelled run is exported only with ``export_cancelled`` and at least one completed epoch;
    otherwise ``model_dir`` stays as it was. ``export_options`` go to
    :func:`~dli_perception.core.export.export_model_dir` (``opset``, ...). An ``"export"`` progress
    event announces the export.
    """
    from dli_perception.core.export import export_model_dir

    cancelled = result.cancelled or job.cancel.is_set()
    if cancelled and not (export_cancelled and result.history):
        return False
    if on_progress is not None:
        last = result.history[-1].epoch if result.history else 0
        on_progress(ProgressEvent("export", last, job.config.epochs, message=f"exporting {job.model_dir}"))
    if export_cancelled:
        export_options.setdefault("allow_cancelled", True)
    export_model_dir(result, job.model_dir, **export_options)
    return True


@dataclass
class TrainOutcome:
    """What :func:`train_and_export` did: the training result and whether ``model_dir`` was replaced."""

    result: TrainResult
    exported: bool


def train_and_export(
    job: TrainJob,
    *,
    on_progress: ProgressCallback | None = None,
    export_cancelled: bool = False,
    **export_options: Any,
) -> TrainOutcome:
    """:func:`train_job` then :func:`export_job`, with torch limited to ``job.torch_threads`` CPU threads."""
    with torch_threads(job.torch_threads), training_dataset(job) as job:
        result = train_job(job, on_progress=on_progress)
        exported = export_job(job, result, on_progress=on_progress, export_cancelled=export_cancelled, **export_options)
    return TrainOutcome(result, exported)
