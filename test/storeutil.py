"""Dataset-store helpers the recorder tests share (core and node)."""

from __future__ import annotations

import time

from dli_perception.core.dataset import DatasetStore


def slow_store(store: DatasetStore, delay_s: float) -> None:
    """Every write of ``store`` takes ``delay_s`` longer while holding the store's lock, as a slow SD card does:
    anything else that reads the store meanwhile waits for it."""
    add_encoded = store.add_encoded

    def slow(*args, **kwargs):
        with store._lock:
            time.sleep(delay_s)
            return add_encoded(*args, **kwargs)

    store.add_encoded = slow
