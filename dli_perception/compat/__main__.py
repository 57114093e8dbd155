"""``python -m dli_perception.compat`` prints the folder to add to PYTHONPATH for ``import cv_bridge``."""

from __future__ import annotations

import sys

from dli_perception.compat import shim_dir

if __name__ == "__main__":
    sys.stdout.write(f"{shim_dir()}\n")
