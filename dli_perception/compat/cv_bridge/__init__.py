"""``cv_bridge`` backed by dli_perception's converter (see :mod:`dli_perception.compat`).

The names cv_bridge's Python package exports: ``CvBridge``, ``CvBridgeError``, ``getCvType`` and
``cvtColorForDisplay``. There is no ``cv_bridge.boost``: code asking for the C++ extension itself
gets an ImportError, as on an install without it.
"""

from __future__ import annotations

from dli_perception.core.imaging import CvBridge, CvBridgeError
from dli_perception.core.imaging.display import cvt_color_for_display as cvtColorForDisplay  # noqa: N813
from dli_perception.core.imaging.encoding_table import cv_type as getCvType  # noqa: N813 - cv_bridge's spelling

IS_DLI_PERCEPTION_SHIM = True
"""Lets a caller tell this stand-in from the real cv_bridge."""

__all__ = ["CvBridge", "CvBridgeError", "cvtColorForDisplay", "getCvType"]
