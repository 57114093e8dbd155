"""Every exception dli_perception raises on purpose, in one place.

Each message says what was wrong and what to do about it. All derive from
:class:`DliPerceptionError`, so a caller can catch the whole family.
"""

from __future__ import annotations


class DliPerceptionError(Exception):
    """Base class of all dli_perception errors."""


class ConfigError(DliPerceptionError, ValueError):
    """A parameter, option or configuration file has an invalid value."""


class ImageConversionError(DliPerceptionError, TypeError):
    """An image message cannot be converted (bad encoding, size, step or data).

    Named ``CvBridgeError`` too, so code written against cv_bridge keeps working.
    """


CvBridgeError = ImageConversionError


class CameraError(DliPerceptionError, RuntimeError):
    """A camera source cannot be opened or stopped delivering frames."""


class DatasetError(DliPerceptionError, RuntimeError):
    """A dataset on disk is missing, corrupt, read-only or full."""


class InvalidLabelError(DatasetError, ValueError):
    """A class name is not allowed (path separators, '..', hidden, empty, too long)."""


class ClassFullError(DatasetError):
    """A class already holds its maximum number of images (the store's ``max_per_class``)."""


class BagError(DliPerceptionError, RuntimeError):
    """A rosbag2 bag cannot be read or written (missing topic, unknown type, corrupt file)."""


class TrainingError(DliPerceptionError, RuntimeError):
    """Training cannot start or failed (no data, missing weights, cancelled)."""


class WeightsNotFoundError(TrainingError, FileNotFoundError):
    """Pretrained weights were asked for but are neither cached nor at the given path."""


class TrainingCancelledError(TrainingError):
    """Training was stopped on request (its cancel event was set) between two batches."""


class ModelError(DliPerceptionError, RuntimeError):
    """A model directory is missing, corrupt or inconsistent with its metadata."""


class BackendUnavailableError(DliPerceptionError, RuntimeError):
    """An inference backend cannot run here (library missing, no GPU, build failed)."""


class BadMessageError(DliPerceptionError, ValueError):
    """A received message cannot be interpreted (malformed JSON, a missing field, a value out of range)."""


class DemoError(DliPerceptionError, RuntimeError):
    """A stage of ``dli-perception demo`` could not finish (no frames, training failed, no model served)."""


class DistributedError(TrainingError):
    """A data-parallel run cannot start or lost a process (port in use, datasets differ, a rank died)."""


class MergeError(DatasetError):
    """Datasets cannot be merged (missing input, output not empty, conflicting labels refused)."""


class TargetError(DatasetError, ValueError):
    """A training target is invalid: an XY point outside [-1, 1], a label set naming unknown labels,
    a road-following file name that does not parse, or task types mixed in one dataset."""
