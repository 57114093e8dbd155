"""The names a dataset directory uses besides its class directories (see the package docstring)."""

from __future__ import annotations

import datetime as _dt

UTC = _dt.timezone.utc  # noqa: UP017 (datetime.UTC needs Python 3.11; Humble runs 3.10)

MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".lock"
#: Suffix given to image files that do not decode, so ImageFolder skips them.
CORRUPT_SUFFIX = ".corrupt"


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds, as manifest lines record it."""
    return _dt.datetime.now(UTC).isoformat(timespec="milliseconds")


def is_temp_name(name: str) -> bool:
    """True for the hidden ``.*.tmp`` files an atomic write leaves when it is interrupted."""
    return name.startswith(".") and name.endswith(".tmp")
