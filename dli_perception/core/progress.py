"""The progress callback of the core's long jobs over many files (import, merge, bag conversion)."""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called after each item; ``total`` is the number of items the job will handle."""
