"""Training data: scan an ImageFolder directory, subsample and split it, and serve (augmented) samples.

Images end in :func:`dli_perception.core.preprocess.normalize`; evaluation uses
:func:`~dli_perception.core.preprocess.resize` (the classifier's own path) and augmentation
:func:`~dli_perception.core.preprocess.train_view`, so both views are defined in one place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dli_perception.core import tasks
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS, decode_rgb, read_rgb
from dli_perception.core.preprocess import PreprocessConfig, normalize, resize, train_view
from dli_perception.core.splits import stratified_split as split_stratified
from dli_perception.core.training.samples import DatasetSummary, Sample, TrainData
from dli_perception.core.training.store_data import load_store_data, resolve_task
from dli_perception.errors import DatasetError, TrainingCancelledError

if TYPE_CHECKING:
    from dli_perception.core.training.config import TrainConfig

logger = logging.getLogger(__name__)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_image_folder(
    root: str | os.PathLike,
    *,
    cancel: threading.Event | None = None,
) -> tuple[list[str], list[Sample], DatasetSummary]:
    """Read an ImageFolder directory ``<root>/<class>/**/<image>``; every image is decoded once.

    Classes are the sorted visible sub-directories. Files without an image extension are
    ignored (counted), images that cannot be decoded are skipped and listed in the summary
    with a warning. Raises :class:`DatasetError` for a missing root, fewer than two classes
    or a class without a usable image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist; record images first or check the path")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if len(classes) < 2:
        raise DatasetError(
            f"{root} has {len(classes)} class folder(s) {classes}; a classifier needs at least two "
            "(one sub-directory of images per class)"
        )
    samples: list[Sample] = []
    skipped: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    ignored = 0
    digest_lines: list[str] = []
    for label, name in enumerate(classes):
        n = 0
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file()
            and all(_visible(part) for part in p.relative_to(root).parents if part != Path("."))
            and _visible(p)
        )
        for path in files:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelledError("cancelled while reading the dataset")
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored += 1
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                skipped.append({"file": rel, "reason": f"unreadable: {exc.strerror or exc}"})
                continue
            if decode_rgb(data) is None:
                skipped.append({"file": rel, "reason": "not a decodable image"})
                continue
            digest_lines.append(f"{rel}\t{hashlib.sha256(data).hexdigest()}\n")
            samples.append((str(path), label))
            n += 1
        counts[name] = n
    for item in skipped:
        logger.warning("skipped %s: %s", item["file"], item["reason"])
    if skipped:
        logger.warning(
            "%d of %d image files in %s could not be read and were skipped",
            len(skipped),
            len(skipped) + len(samples),
            root,
        )
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(
            f"class folder(s) {empty} in {root} hold no usable image; add images or remove the folder(s)"
        )
    digest = hashlib.sha256("".join(sorted(digest_lines)).encode("utf-8")).hexdigest()
    summary = DatasetSummary(
        root=str(root.resolve()),
        classes=classes,
        counts=counts,
        skipped=skipped,
        ignored_files=ignored,
        sha256=digest,
    )
    return classes, samples, summary


def load_data(
    dataset: str | os.PathLike,
    config: TrainConfig,
    *,
    cancel: threading.Event | None = None,
) -> TrainData:
    """Scan an ImageFolder directory, subsample (``max_images_per_class``) and split it (seeded).

    The task is ``config.task`` (``auto``: the dataset's own, see :func:`.store_data.resolve_task`); regression
    and multi-label datasets are read through their manifest (:func:`.store_data.load_store_data`).
    """
    task = resolve_task(dataset, config.task)
    if task != tasks.CLASSIFICATION:
        return load_store_data(dataset, task, config, cancel=cancel)
    classes, samples, summary = scan_image_folder(dataset, cancel=cancel)
    if config.max_images_per_class:
        kept: list[Sample] = []
        for label in range(len(classes)):
            members = [s for s in samples if s[1] == label]
            if len(members) > config.max_images_per_class:
                rng = np.random.default_rng([config.seed, 2, label])
                pick = sorted(rng.choice(len(members), config.max_images_per_class, replace=False).tolist())
                members = [members[i] for i in pick]
            kept.extend(members)
        samples = kept
    labels = [s[1] for s in samples]
    too_few = {c: labels.count(i) for i, c in enumerate(classes) if labels.count(i) < 2}
    if too_few:
        raise DatasetError(
            f"classes with fewer than two usable images in {summary.root}: {too_few}; each class needs at "
            "least two (one for training, one for validation): add images"
        )
    train_idx, val_idx = split_stratified(labels, config.val_fraction, config.seed)
    train = [samples[i] for i in train_idx]
    val = [samples[i] for i in val_idx]
    summary.train_counts = {c: sum(1 for s in train if s[1] == i) for i, c in enumerate(classes)}
    summary.val_counts = {c: sum(1 for s in val if s[1] == i) for i, c in enumerate(classes)}
    logger.info(
        "dataset %s: %d classes, %d training and %d validation images",
        summary.root,
        len(classes),
        len(train),
        len(val),
    )
    return TrainData(classes=classes, train=train, val=val, summary=summary)


def augment_image(
    image: np.ndarray, preprocess: PreprocessConfig, config: TrainConfig, rng: np.random.Generator
) -> np.ndarray:
    """Training view of an HxWx3 uint8 RGB image with ``config``'s augmentation: size x size x 3 uint8.

    :func:`~dli_perception.core.preprocess.train_view` with ``crop_scale``, ``crop_ratio``, ``color_jitter``
    and ``hflip`` of ``config`` (for classification and multi-label images; see :func:`augment_sample`).
    """
    return train_view(
        image,
        preprocess,
        rng,
        crop_scale=config.crop_scale,
        crop_ratio=config.crop_ratio,
        color_jitter=config.color_jitter,
        hflip=config.hflip,
    )


def augment_sample(
    image: np.ndarray,
    target: Any,
    preprocess: PreprocessConfig,
    config: TrainConfig,
    rng: np.random.Generator,
    task: str,
) -> tuple[np.ndarray, Any]:
    """Training view of an image and its target, kept consistent.

    Regression: colour jitter only, no random crop (a crop moves the point, and a point cropped away has no
    place in the image), and with ``hflip`` a horizontal flip half of the time that negates ``x`` (the view
    is centred, so the mirror of ``x`` is ``-x``). Other tasks: :func:`augment_image`.
    """
    if task != tasks.REGRESSION:
        return augment_image(image, preprocess, config, rng), target
    view = train_view(
        image, preprocess, rng, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), color_jitter=config.color_jitter
    )
    if config.hflip and rng.random() < 0.5:
        view = np.ascontiguousarray(view[:, ::-1])
        target = np.asarray(target, dtype=np.float32) * np.asarray([-1.0, 1.0], dtype=np.float32)
    return view, target


class ImageSamples:
    """Map-style dataset of ``(path, target)`` samples for a ``DataLoader``: (float32 CHW, target).

    With ``augment`` set, sample ``i`` in epoch ``e`` is augmented with an RNG seeded by
    ``(seed, e, i)``: the same views whatever the worker count, and again after a resume.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocess: PreprocessConfig,
        augment: TrainConfig | None = None,
        seed: int = 0,
        task: str = tasks.CLASSIFICATION,
    ) -> None:
        self.samples = list(samples)
        self.task = task
        self.preprocess = preprocess
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        path, label = self.samples[index]
        image = read_rgb(path)
        if self.task != tasks.CLASSIFICATION:
            label = np.asarray(label, dtype=np.float32)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, 3, int(self.epoch), int(index)])
            image, label = augment_sample(image, label, self.preprocess, self.augment, rng, self.task)
        else:
            image = resize(image, self.preprocess)
        return normalize(image, self.preprocess), label
