"""Stand-ins for ROS Python packages, for code written against them on machines that lack them.

``dli_perception/compat/cv_bridge`` is a ``cv_bridge`` module backed by
:mod:`dli_perception.core.imaging`. It is importable as ``cv_bridge`` only when this folder is on
``sys.path`` (``PYTHONPATH=$(python -m dli_perception.compat)``), so installing dli_perception never
shadows a real cv_bridge on a robot.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["shim_dir"]


def shim_dir() -> Path:
    """The folder to put on ``sys.path`` (or PYTHONPATH) to import the stand-ins by their ROS names."""
    return Path(__file__).resolve().parent
