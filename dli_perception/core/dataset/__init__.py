"""The on-disk dataset store (moving into small modules; see store.py)."""

from dli_perception.core.dataset.store import *  # noqa: F403
from dli_perception.core.dataset.store import IMAGE_EXTENSIONS  # noqa: F401
