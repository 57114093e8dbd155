"""Class names: which strings mean "no label" and which are safe as a class directory.

Class names arrive from topics, services and bags, so :func:`validate_label` refuses
anything that could escape ROOT or confuse ImageFolder.
"""

from __future__ import annotations

import unicodedata

from dli_perception.core.dataset.layout import MANIFEST_NAME
from dli_perception.errors import InvalidLabelError

MAX_LABEL_LENGTH = 64
#: Label values that mean "nothing is being shown": images under them are never saved.
NO_LABEL_NAMES = frozenset({"", "none", "unknown"})


def is_no_label(name: str | None) -> bool:
    """True when ``name`` means "no label" (``None``, empty, blank, ``none``, ``unknown``; any case)."""
    return name is None or name.strip().casefold() in NO_LABEL_NAMES


def validate_label(name: str) -> str:
    """Return the canonical form of class name ``name`` or raise :class:`InvalidLabelError`.

    Surrounding whitespace is stripped and the name is NFC-normalised. Refused:
    empty or blank names, the no-label names (``none``, ``unknown``), more than
    64 characters, path separators (``/``, ``\\``), ``..``, a leading ``.``
    (hidden), control or invisible characters, and the manifest's file name.
    """
    if not isinstance(name, str):
        raise InvalidLabelError(f"class name must be a string, got {type(name).__name__}")
    label = unicodedata.normalize("NFC", name.strip())
    if not label:
        raise InvalidLabelError("class name is empty; publish the name of the object being shown")
    if label.casefold() in NO_LABEL_NAMES:
        raise InvalidLabelError(f"class name {label!r} is reserved: it means 'no label'; choose a real class name")
    if len(label) > MAX_LABEL_LENGTH or len(label.encode("utf-8")) > 255:
        raise InvalidLabelError(
            f"class name {label[:MAX_LABEL_LENGTH]!r}... has {len(label)} characters; use at most {MAX_LABEL_LENGTH}"
        )
    if "/" in label or "\\" in label:
        raise InvalidLabelError(f"class name {label!r} contains a path separator; use a plain name")
    if ".." in label:
        raise InvalidLabelError(f"class name {label!r} contains '..'; use a plain name")
    if label.startswith("."):
        raise InvalidLabelError(f"class name {label!r} starts with '.' (a hidden directory); remove it")
    bad = [c for c in label if unicodedata.category(c).startswith("C")]
    if bad:
        raise InvalidLabelError(f"class name {label!r} contains control or invisible characters {bad!r}; remove them")
    if label.casefold() == MANIFEST_NAME:
        raise InvalidLabelError(f"class name {label!r} is the manifest's file name; choose another")
    if label.startswith("_"):
        raise InvalidLabelError(
            f"class name {label!r} starts with '_', which is kept for summary keys such as '_total'; remove it"
        )
    return label


def is_canonical_label(name: str) -> bool:
    """True when ``name`` is a valid class name already in its canonical form."""
    try:
        return validate_label(name) == name
    except InvalidLabelError:
        return False
