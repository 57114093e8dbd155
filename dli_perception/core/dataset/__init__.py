"""The on-disk dataset store: labelled images in ImageFolder layout plus a manifest.

Layout::

    ROOT/
      manifest.jsonl          one JSON object per image, in capture order
      <class>/<seq>_<sha12>.jpg    classification; regression images live in xy/, multi-label ones
                              in multilabel/, their targets in the manifest
      labels.txt              multi-label only, optional: the declared label vocabulary
      .lock                   flock'ed by the one process that writes the store

``torchvision.datasets.ImageFolder(ROOT)`` reads the directory as-is (it only
looks at sub-directories, so the manifest and the lock file are invisible to it).

Where each part lives:

- :mod:`.store`: :class:`DatasetStore`, the one object that opens, writes and repairs a store;
- :mod:`.labels`: which class names are allowed (:func:`validate_label`, :func:`is_no_label`);
- :mod:`.manifest`: the manifest's lines (:class:`ManifestEntry`) and its file;
- :mod:`.encoding`: image bytes (:func:`encode_image`, :func:`probe_image`);
- :mod:`.index`: the in-memory lookups behind dedupe and class limits, and what a write returns;
- :mod:`.directory`: ROOT, its writer lock and its class directories;
- :mod:`.repair`: the read path that repairs what a crash left (:class:`RepairReport`);
- :mod:`.importing`: importing an ImageFolder directory (:class:`ImportStats`);
- :mod:`.targets`: per-task targets, counts and the multi-label vocabulary (``labels.txt``);
- :mod:`.jetbot`: importing the JetBot road-following layout (:class:`JetbotImportStats`);
- :mod:`.disk` and :mod:`.layout`: disk errors in words, durable writes, the directory's file names.

A full disk or a read-only directory makes a write fail with
:class:`~dli_perception.errors.DatasetError`; nothing is half-written and earlier images
stay as they were. Every class directory is resolved and checked to lie inside ROOT before a write.
"""

from dli_perception.core.dataset.encoding import IMAGE_FORMATS, EncodedImage, encode_image, probe_image
from dli_perception.core.dataset.importing import ImportStats, ProgressCallback, import_folder
from dli_perception.core.dataset.index import CaptureResult, Reservation
from dli_perception.core.dataset.jetbot import JetbotImportStats, import_jetbot
from dli_perception.core.dataset.labels import MAX_LABEL_LENGTH, NO_LABEL_NAMES, is_no_label, validate_label
from dli_perception.core.dataset.layout import CORRUPT_SUFFIX, LOCK_NAME, MANIFEST_NAME
from dli_perception.core.dataset.manifest import ManifestEntry
from dli_perception.core.dataset.repair import RepairReport
from dli_perception.core.dataset.store import DatasetStore
from dli_perception.core.dataset.targets import LABELS_NAME
from dli_perception.core.imagefiles import IMAGE_EXTENSIONS

__all__ = [
    "CORRUPT_SUFFIX",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "LABELS_NAME",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "MAX_LABEL_LENGTH",
    "NO_LABEL_NAMES",
    "CaptureResult",
    "DatasetStore",
    "EncodedImage",
    "ImportStats",
    "import_folder",
    "import_jetbot",
    "JetbotImportStats",
    "ManifestEntry",
    "ProgressCallback",
    "RepairReport",
    "Reservation",
    "encode_image",
    "is_no_label",
    "probe_image",
    "validate_label",
]
