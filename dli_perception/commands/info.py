"""``dli-perception info``: what this installation can do (versions, backends, transport profile)."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
from dataclasses import dataclass

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


@dataclass(frozen=True)
class BackendStatus:
    """Whether an inference backend can run here: ``detail`` says with what (devices, providers) or why not."""

    name: str
    available: bool
    detail: str


def _torch_devices() -> str:
    import torch

    try:
        cuda = torch.cuda.is_available()
    except Exception as exc:  # noqa: BLE001  (a broken driver raises anything from inside torch)
        return f"device cpu (CUDA check failed: {exc})"
    return f"devices cpu, cuda ({torch.cuda.get_device_name(0)})" if cuda else "device cpu (no CUDA GPU)"


def backend_statuses() -> list[BackendStatus]:
    """Every backend in the order ``backend:=auto`` tries them, with what it would run on here.

    The same checks ``auto`` makes before loading a model (library present, GPU usable, execution
    providers), so the first available one is what ``auto`` picks for a model that loads.
    """
    from dli_perception.core.backends.onnxruntime import available_providers, plan_providers
    from dli_perception.core.backends.select import BACKENDS, precheck
    from dli_perception.errors import DliPerceptionError

    statuses = []
    for name in BACKENDS:
        reason = precheck(name, {})
        detail = reason or ""
        if reason is None and name == "onnxruntime":
            offered = available_providers()
            try:
                plan = plan_providers(offered, "auto")
            except DliPerceptionError as exc:
                reason = detail = str(exc)
            else:
                detail = f"providers {', '.join(offered)}; auto uses {', '.join(plan)}"
        elif reason is None and name == "torch":
            try:
                detail = _torch_devices()
            except Exception as exc:  # noqa: BLE001  (installed but broken: report it, as auto would fail)
                reason = detail = f"torch does not import: {type(exc).__name__}: {exc}"
        elif reason is None and name == "tensorrt":
            from dli_perception.core.backends.tensorrt import tensorrt_availability

            detail = tensorrt_availability().reason
        statuses.append(BackendStatus(name, reason is None, detail))
    return statuses


def auto_choice(statuses: list[BackendStatus]) -> str | None:
    """The backend ``auto`` picks: the first available one (``None`` when none can run)."""
    return next((s.name for s in statuses if s.available), None)


def run(args: argparse.Namespace) -> int:
    print(f"dli_perception {__version__} on Python {platform.python_version()} ({platform.machine()})")
    for name in LIBRARIES:
        print(f"  {name:<12} {_version(name)}")
    print("inference backends (backend:=auto tries them in this order)")
    statuses = backend_statuses()
    for status in statuses:
        print(f"  {status.name:<12} {'available' if status.available else 'not available'}: {status.detail}")
    chosen = auto_choice(statuses)
    print(f"backend auto         {chosen or 'none: install onnxruntime or torch'}")
    print(f"share directory      {transport.share_dir()}")
    print(f"Fast DDS profile     {transport.apply_default_profile(dict(os.environ)) or 'none'}")
    return 0
