"""Transfer learning for image classification: a torchvision backbone with a new head for N classes.

The package is split by concern; this module re-exports the names callers use, so
``from dli_perception.core.training import train, TrainConfig`` keeps working:

* :mod:`.backbones`: backbones and their initial weights (:func:`build_model`);
* :mod:`.config`: :class:`TrainConfig`;
* :mod:`.samples`: samples, a loaded dataset (:class:`TrainData`) and its summary;
* :mod:`.data`: scanning, splitting and serving the images (:func:`load_data`);
* :mod:`.store_data`: regression and multi-label datasets, read through their manifest;
* :mod:`.steps`: :func:`train_one_epoch` and :func:`evaluate`;
* :mod:`.features`: the head-mode feature cache (:func:`extract_features`);
* :mod:`.run`: the state of one run (``_Run``, subclassed by the distributed run);
* :mod:`.checkpoints`: ``best.pt``/``last.pt``, resume;
* :mod:`.results`: progress events and results;
* :mod:`.loop`: :func:`train`, which ties them together;
* :mod:`.service`: train then export a model directory (the trainer node and ``dli-perception train``).

torch, torchvision and cv2 are imported inside functions, so importing this package (configs,
events, results) stays cheap for a node.
"""

from dli_perception.core.imagefiles import IMAGE_EXTENSIONS, decode_rgb, read_rgb
from dli_perception.core.splits import stratified_split as split_stratified
from dli_perception.core.training.backbones import (
    BACKBONES,
    BackboneSpec,
    WeightsInfo,
    backbone_spec,
    build_model,
    get_head,
    imagenet_weights_path,
)
from dli_perception.core.training.checkpoints import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LAST_CHECKPOINT,
    load_training_checkpoint,
    model_from_checkpoint,
    result_from_checkpoint,
    save_checkpoint,
)
from dli_perception.core.training.config import (
    AMP_MODES,
    CLASS_BALANCE,
    DEVICES,
    MODES,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
)
from dli_perception.core.training.data import ImageSamples, augment_image, load_data, scan_image_folder
from dli_perception.core.training.features import epoch_views, extract_features, feature_train_batches
from dli_perception.core.training.loop import train
from dli_perception.core.training.results import (
    EpochStats,
    EvalResult,
    ProgressCallback,
    ProgressEvent,
    TrainResult,
    per_class_metrics,
)
from dli_perception.core.training.run import _Run
from dli_perception.core.training.samples import DatasetSummary, Sample, TrainData
from dli_perception.core.training.steps import FINETUNE_MICRO_BATCH, BatchCallback, _parts, evaluate, train_one_epoch

__all__ = [
    "AMP_MODES",
    "BACKBONES",
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CLASS_BALANCE",
    "DEVICES",
    "IMAGE_EXTENSIONS",
    "LAST_CHECKPOINT",
    "MODES",
    "OPTIMIZERS",
    "SCHEDULES",
    "BackboneSpec",
    "BatchCallback",
    "DatasetSummary",
    "EpochStats",
    "EvalResult",
    "FINETUNE_MICRO_BATCH",
    "ImageSamples",
    "ProgressCallback",
    "ProgressEvent",
    "Sample",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "WeightsInfo",
    "_Run",
    "_parts",
    "augment_image",
    "backbone_spec",
    "build_model",
    "decode_rgb",
    "epoch_views",
    "evaluate",
    "extract_features",
    "feature_train_batches",
    "get_head",
    "imagenet_weights_path",
    "load_data",
    "load_training_checkpoint",
    "model_from_checkpoint",
    "per_class_metrics",
    "read_rgb",
    "result_from_checkpoint",
    "save_checkpoint",
    "scan_image_folder",
    "split_stratified",
    "train",
    "train_one_epoch",
]
