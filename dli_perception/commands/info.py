"""``dli-perception info``: what this installation can do (versions, backends, transport profile)."""

from __future__ import annotations

import argparse
import importlib
import os
import platform

from dli_perception import __version__, transport

LIBRARIES = ("rclpy", "numpy", "cv2", "torch", "torchvision", "onnx", "onnxruntime", "tensorrt", "rosbags", "cv_bridge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, available backends and the transport profile")
    p.set_defaults(func=run)


def _version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # an installed but broken library is worth reporting too
        return f"not available ({type(exc).__name__})"
    return str(getattr(module, "__version__", "installed"))


def run(args: argparse.Namespace) -> int:
    print(f"dli_perception {__version__} on Python {platform.python_version()} ({platform.machine()})")
    for name in LIBRARIES:
        print(f"  {name:<12} {_version(name)}")
    print(f"share directory      {transport.share_dir()}")
    print(f"Fast DDS profile     {transport.apply_default_profile(dict(os.environ)) or 'none'}")
    return 0
