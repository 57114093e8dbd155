"""Camera intrinsics for ``camera_info``: from a calibration file or from the field of view.

Calibration files use the ROS ``camera_calibration`` YAML format (``image_width``,
``image_height``, ``camera_matrix``, ``distortion_model``,
``distortion_coefficients``, ``rectification_matrix``, ``projection_matrix``).
Without one, an ideal pinhole is derived from the horizontal field of view (the
JetBot's Raspberry Pi camera v2 sees 62.2 degrees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from dli_perception.errors import ConfigError


@dataclass
class Intrinsics:
    """What sensor_msgs/CameraInfo carries, in row-major lists."""

    width: int
    height: int
    k: list[float]
    d: list[float] = field(default_factory=lambda: [0.0] * 5)
    r: list[float] = field(default_factory=lambda: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    p: list[float] = field(default_factory=list)
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        if not self.p:
            k = self.k
            self.p = [k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]


def pinhole_from_fov(width: int, height: int, horizontal_fov_deg: float) -> Intrinsics:
    """Ideal pinhole (square pixels, centred principal point) for a horizontal field of view in degrees."""
    if not 1.0 <= horizontal_fov_deg < 179.0:
        raise ConfigError(f"horizontal_fov_deg must be in [1, 179), got {horizontal_fov_deg}")
    fx = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    return Intrinsics(width, height, [fx, 0.0, width / 2.0, 0.0, fx, height / 2.0, 0.0, 0.0, 1.0])


def load_calibration(path: str | Path) -> Intrinsics:
    """Read a ``camera_calibration`` YAML file; raises ConfigError naming the missing or bad key."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"camera calibration file {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"camera calibration file {path} is not valid YAML: {exc}") from exc

    def matrix(key: str, size: int) -> list[float]:
        try:
            values = [float(v) for v in data[key]["data"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: '{key}.data' is missing or not numeric") from exc
        if size and len(values) != size:
            raise ConfigError(f"{path}: '{key}.data' must have {size} values, has {len(values)}")
        return values

    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping")
    try:
        width, height = int(data["image_width"]), int(data["image_height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: image_width and image_height are required integers") from exc
    return Intrinsics(
        width=width,
        height=height,
        k=matrix("camera_matrix", 9),
        d=matrix("distortion_coefficients", 0),
        r=matrix("rectification_matrix", 9),
        p=matrix("projection_matrix", 12),
        distortion_model=str(data.get("distortion_model", "plumb_bob")),
    )


def scaled(intr: Intrinsics, width: int, height: int) -> Intrinsics:
    """The same camera at another resolution (intrinsics scale with the image)."""
    if (width, height) == (intr.width, intr.height):
        return intr
    sx, sy = width / intr.width, height / intr.height
    k = list(intr.k)
    k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
    p = list(intr.p)
    p[0], p[2], p[5], p[6] = p[0] * sx, p[2] * sx, p[5] * sy, p[6] * sy
    return Intrinsics(width, height, k, list(intr.d), list(intr.r), p, intr.distortion_model)
