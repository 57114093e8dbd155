"""The JSON field readers and writers every result of :mod:`dli_perception.core.contracts` is made of.

Each reader takes the decoded object, the key and a ``what`` naming the message, and raises
:class:`~dli_perception.errors.BadMessageError` saying which field is wrong. The names keep their
leading underscore: they are the contracts' own, not an interface of the package.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from dli_perception.errors import BadMessageError


def _load(text: str | bytes, what: str) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadMessageError(f"{what}: not valid JSON ({exc})") from None


def _object(text: str | bytes, what: str) -> dict[str, Any]:
    data = _load(text, what)
    if not isinstance(data, dict):
        raise BadMessageError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _num(data: dict[str, Any], key: str, what: str, *, optional: bool = False, default: Any = None) -> Any:
    """A finite number (int or float) or, when ``optional``, None/missing -> ``default``."""
    if key not in data and not optional:
        raise BadMessageError(f"{what}: missing field {key!r}")
    value = data.get(key)
    if value is None and optional:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadMessageError(f"{what}: field {key!r} must be a finite number, got {value!r}")
    return value


def _int(data: dict[str, Any], key: str, what: str, *, optional: bool = False, default: int | None = None) -> Any:
    """:func:`_num` as a whole number (a float is truncated); None stays None."""
    value = _num(data, key, what, optional=optional, default=default)
    return None if value is None else int(value)


def _choice(data: dict[str, Any], key: str, what: str, allowed: tuple[str, ...]) -> str:
    """A string field that must be one of ``allowed``."""
    value = _str(data, key, what)
    if value not in allowed:
        raise BadMessageError(f"{what}: unknown {key} {value!r} (expected one of {', '.join(allowed)})")
    return value


def _str(data: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BadMessageError(f"{what}: field {key!r} must be a string, got {value!r}")
    return value


def _bool(data: dict[str, Any], key: str, what: str, default: bool | None = None) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise BadMessageError(f"{what}: field {key!r} must be true or false, got {value!r}")
    return value


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


def stamp_ns_of(header: Any) -> int:
    """The ``stamp`` of a std_msgs/Header (or anything with ``stamp.sec``/``stamp.nanosec``) in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _stamp_to_json(stamp_ns: int | None) -> dict[str, int] | None:
    if stamp_ns is None:
        return None
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return {"sec": sec, "nanosec": nanosec}


def _stamp_from_json(data: dict[str, Any], what: str) -> int | None:
    """``data["stamp"]`` ({sec, nanosec}) in nanoseconds; None when absent or null."""
    stamp = data.get("stamp")
    if stamp is None:
        return None
    if not isinstance(stamp, dict):
        raise BadMessageError(f"{what}: 'stamp' must be {{sec, nanosec}}, got {stamp!r}")
    sec, nanosec = _num(stamp, "sec", what), _num(stamp, "nanosec", what)
    return int(sec) * 1_000_000_000 + int(nanosec)


def _encode_frame_result(result: Any) -> str:
    """A result made from one image (:class:`Scores`, :class:`XYResult`, :class:`LabelSet`) as JSON: its
    fields, with ``stamp_ns`` written first as the image header's ``stamp`` ``{sec, nanosec}``."""
    data = asdict(result)
    del data["stamp_ns"]
    return _dumps({"stamp": _stamp_to_json(result.stamp_ns), **data})


def _frame_result(text: str | bytes, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON object of a result made from one image and the fields every such result has
    (``stamp_ns``, ``frame_id``, timings, ``model``, ``stages_ms``) decoded, as ``(data, fields)``."""
    data = _object(text, what)
    stamp_ns = _stamp_from_json(data, what)
    if stamp_ns is None:
        raise BadMessageError(f"{what}: missing 'stamp' {{sec, nanosec}}")
    return data, {
        "stamp_ns": stamp_ns,
        "frame_id": _str(data, "frame_id", what, ""),
        "latency_ms": _num(data, "latency_ms", what, optional=True),
        "inference_ms": _num(data, "inference_ms", what, optional=True),
        "model": _str(data, "model", what, ""),
        "stages_ms": _float_map(data, "stages_ms", what, "stage names to milliseconds"),
    }


def _float_map(data: dict[str, Any], key: str, what: str, meaning: str) -> dict[str, float]:
    """``data[key]``: an object of names to finite numbers (empty when absent)."""
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value.values()
    ):
        raise BadMessageError(f"{what}: {key!r} must map {meaning}")
    return {str(k): float(v) for k, v in value.items()}
