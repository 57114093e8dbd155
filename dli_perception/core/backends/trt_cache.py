"""The TensorRT engine cache: keys, file paths, sidecars, lookup, eviction, atomic stores.

Building an engine takes seconds on a desktop GPU and minutes on a Jetson, so the
serialized engine is cached as ``<cache_dir>/<key>.engine`` with a JSON sidecar.
The key (:class:`EngineKey`) is a sha256 over everything that makes an engine valid:
the ONNX bytes, the TensorRT version, the GPU (name and compute capability), the
precision and the engine variant (which ONNX variant, built how: see :mod:`.trt_compat`),
the batch profile and the workspace limit. A start with the same inputs reuses the
engine; a change in any of them gives a new key and a rebuild; a corrupt or
mismatching cache entry is evicted and rebuilt. Writes are atomic.

Plain Python: nothing here imports ``tensorrt`` or needs a GPU; building and
deserializing come in as callables (:func:`load_or_build_engine`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dli_perception.core.backends.base import PRECISIONS
from dli_perception.core.backends.trt_compat import ENGINE_VARIANTS
from dli_perception.core.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from dli_perception.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Version of the cache layout and key; bump it to invalidate every cached engine."""

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
CALIB_SUFFIX = ".calib"
CACHE_ENV = "DLI_PERCEPTION_ENGINE_CACHE"

T = TypeVar("T")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on; :attr:`digest` names its cache file."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    max_batch: int
    workspace_bytes: int
    opt_batch: int = 1
    calibration_sha256: str = ""
    variant: str = "fp32"
    cache_format: int = CACHE_FORMAT

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.variant not in ENGINE_VARIANTS:
            raise ConfigError(f"engine variant must be one of {ENGINE_VARIANTS}, got {self.variant!r}")
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        if not isinstance(self.opt_batch, int) or not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"opt_batch must be in [1, max_batch={self.max_batch}], got {self.opt_batch!r}")
        if not isinstance(self.workspace_bytes, int) or self.workspace_bytes < 1 << 20:
            raise ConfigError(f"workspace must be at least 1 MiB, got {self.workspace_bytes!r} bytes")
        if not self.onnx_sha256:
            raise ConfigError("EngineKey needs the ONNX model's sha256")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        """Inverse of :meth:`to_dict`; :class:`ConfigError` for missing or unknown fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"engine key must have exactly the fields {sorted(names)}, got {got}")
        return cls(**data)

    @property
    def digest(self) -> str:
        """sha256 over the canonical JSON of all fields (hex, 64 chars)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def onnx_fingerprint(onnx_path: str | os.PathLike) -> str:
    """sha256 of ``model.onnx``, extended with its external-data file (``model.onnx.data``) when present."""
    onnx_path = Path(onnx_path)
    digest = sha256_file(onnx_path)
    data = onnx_path.with_name(onnx_path.name + ".data")
    if data.is_file():
        digest = hashlib.sha256(f"{digest}:{sha256_file(data)}".encode()).hexdigest()
    return digest


def default_engine_cache_dir() -> Path:
    """``$DLI_PERCEPTION_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/dli_perception/engines`` (``~/.cache`` default)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dli_perception" / "engines"


def engine_paths(cache_dir: str | os.PathLike, key: EngineKey) -> tuple[Path, Path]:
    """``(<cache_dir>/<digest>.engine, <cache_dir>/<digest>.json)``."""
    cache_dir = Path(cache_dir)
    return cache_dir / f"{key.digest}{ENGINE_SUFFIX}", cache_dir / f"{key.digest}{SIDECAR_SUFFIX}"


def validate_sidecar(sidecar_path: Path, key: EngineKey, engine_path: Path) -> str | None:
    """Why the cached engine for ``key`` must not be used, or ``None`` when sidecar and engine check out.

    Checks: sidecar present and valid JSON, every key field equal, engine present
    with the recorded size and sha256 (a truncated or altered engine is never loaded).
    """
    try:
        data = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no sidecar beside the engine"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"sidecar is unreadable ({exc})"
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        return "sidecar has no 'key' object"
    expected = key.to_dict()
    diffs = [
        f"{name}: cached {data['key'].get(name)!r} != wanted {value!r}"
        for name, value in expected.items()
        if data["key"].get(name) != value
    ]
    extra = sorted(set(data["key"]) - set(expected))
    if diffs or extra:
        return "sidecar does not match (" + "; ".join(diffs + [f"unexpected field {e}" for e in extra]) + ")"
    if data.get("digest") != key.digest:
        return "sidecar digest does not match its key"
    try:
        size = engine_path.stat().st_size
    except FileNotFoundError:
        return "engine file is missing"
    if size != data.get("engine_bytes"):
        return f"engine file has {size} bytes, sidecar recorded {data.get('engine_bytes')} (truncated?)"
    if sha256_file(engine_path) != data.get("engine_sha256"):
        return "engine file content differs from the sidecar's sha256 (corrupt)"
    return None


@dataclass(frozen=True)
class CacheLookup:
    """Result of :func:`lookup_engine`: ``hit`` or the ``reason`` it missed."""

    hit: bool
    engine_path: Path
    sidecar_path: Path
    reason: str


def evict_engine(cache_dir: str | os.PathLike, digest: str) -> list[Path]:
    """Delete the engine, sidecar and calibration cache named ``digest``; returns what was removed."""
    removed = []
    for suffix in (SIDECAR_SUFFIX, ENGINE_SUFFIX, CALIB_SUFFIX):
        path = Path(cache_dir) / f"{digest}{suffix}"
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def lookup_engine(cache_dir: str | os.PathLike, key: EngineKey) -> CacheLookup:
    """Find a valid cached engine for ``key``; an invalid entry is evicted so it gets rebuilt."""
    engine_path, sidecar_path = engine_paths(cache_dir, key)
    if not engine_path.exists() and not sidecar_path.exists():
        return CacheLookup(False, engine_path, sidecar_path, "no cached engine for this key")
    reason = validate_sidecar(sidecar_path, key, engine_path)
    if reason is None:
        try:
            os.utime(engine_path)  # mark as recently used for prune_engine_cache
        except OSError:
            pass
        return CacheLookup(True, engine_path, sidecar_path, "cached engine is valid")
    log.warning("evicting cached TensorRT engine %s: %s", engine_path.name, reason)
    evict_engine(cache_dir, key.digest)
    return CacheLookup(False, engine_path, sidecar_path, reason)


def store_engine(cache_dir: str | os.PathLike, key: EngineKey, engine: bytes) -> Path:
    """Write the engine, then its sidecar, each atomically; returns the engine path.

    The sidecar goes last, so a crash in between leaves an engine without sidecar,
    which :func:`lookup_engine` treats as a miss.
    """
    if not engine:
        raise ConfigError("refusing to cache an empty engine")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path, sidecar_path = engine_paths(cache_dir, key)
    atomic_write_bytes(engine_path, engine)
    sidecar = {
        "key": key.to_dict(),
        "digest": key.digest,
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_bytes": len(engine),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(sidecar_path, json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return engine_path


def prune_engine_cache(cache_dir: str | os.PathLike, keep: int = 8) -> list[Path]:
    """Keep the ``keep`` most recently used engines, delete older ones and orphan sidecars; returns removed."""
    cache_dir = Path(cache_dir)
    if keep < 0:
        raise ConfigError(f"keep must be >= 0, got {keep}")
    if not cache_dir.is_dir():
        return []
    engines = sorted(cache_dir.glob(f"*{ENGINE_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
    removed: list[Path] = []
    for old in engines[keep:]:
        removed += evict_engine(cache_dir, old.name[: -len(ENGINE_SUFFIX)])
    for sidecar in cache_dir.glob(f"*{SIDECAR_SUFFIX}"):
        if not sidecar.with_suffix(ENGINE_SUFFIX).exists():
            removed += evict_engine(cache_dir, sidecar.name[: -len(SIDECAR_SUFFIX)])
    return removed


@dataclass(frozen=True)
class EngineCacheResult:
    """How :func:`load_or_build_engine` got its engine: from the cache or ``built``, and why."""

    built: bool
    engine_path: Path
    reason: str
    cached: bool = True


def load_or_build_engine(
    cache_dir: str | os.PathLike,
    key: EngineKey,
    build: Callable[[], bytes],
    deserialize: Callable[[bytes], T | None],
    *,
    rebuild: bool = False,
) -> tuple[T, EngineCacheResult]:
    """Deserialize the cached engine for ``key``, or ``build()`` one, store it and deserialize that.

    ``build`` runs exactly when there is no valid cache entry (or ``rebuild``), and
    again when a cached engine fails to deserialize. An unwritable cache directory
    only costs the cache (logged). Raises :class:`BackendUnavailableError` when the
    build returns nothing or its engine cannot be deserialized.
    """
    engine_path, _ = engine_paths(cache_dir, key)
    if rebuild:
        evict_engine(cache_dir, key.digest)
        reason = "rebuild requested"
    else:
        lookup = lookup_engine(cache_dir, key)
        reason = lookup.reason
        if lookup.hit:
            engine = deserialize(engine_path.read_bytes())
            if engine is not None:
                return engine, EngineCacheResult(False, engine_path, reason)
            reason = "cached engine could not be deserialized"
            log.warning("evicting %s: %s", engine_path.name, reason)
            evict_engine(cache_dir, key.digest)
    log.info("building TensorRT engine %s (%s); this takes minutes on a Jetson", engine_path.name, reason)
    data = build()
    if not data:
        raise BackendUnavailableError("TensorRT returned no engine; see the TensorRT log messages above")
    cached = True
    try:
        store_engine(cache_dir, key, bytes(data))
    except OSError as exc:
        cached = False
        log.warning("cannot cache the TensorRT engine in %s (%s); it will be rebuilt next start", cache_dir, exc)
    engine = deserialize(bytes(data))
    if engine is None:
        evict_engine(cache_dir, key.digest)
        raise BackendUnavailableError("TensorRT built an engine it cannot deserialize; check the TensorRT log")
    return engine, EngineCacheResult(True, engine_path, reason, cached)
