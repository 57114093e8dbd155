"""Dataset-store helpers the recorder, bag and teach tests share."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dli_perception.core.dataset import MANIFEST_NAME, DatasetStore


def manifest(root: Path) -> list[dict]:
    """Every line of the dataset's ``manifest.jsonl``, parsed (none while the file does not exist)."""
    path = Path(root) / MANIFEST_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def slow_store(store: DatasetStore, delay_s: float) -> None:
    """Every write of ``store`` takes ``delay_s`` longer while holding the store's lock, as a slow SD card does:
    anything else that reads the store meanwhile waits for it."""
    add_encoded = store.add_encoded

    def slow(*args, **kwargs):
        with store._lock:
            time.sleep(delay_s)
            return add_encoded(*args, **kwargs)

    store.add_encoded = slow
