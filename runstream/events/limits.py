"""Explicit, documented limits on what a record may carry."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from runstream.errors import InvalidRecord


@dataclass(frozen=True)
class Limits:
    """Bounds applied per record by the validators (see README, "Limits").

    A log line longer than ``max_line_bytes`` is truncated with a marker and
    its original length kept; everything else over a limit is refused.
    """

    max_line_bytes: int = 65_536
    max_records_per_batch: int = 100_000
    max_metric_name_chars: int = 256
    max_metric_keys_per_record: int = 1_000
    max_text_field_chars: int = 4_096
    max_config_bytes: int = 1_048_576
    #: Skew of a producer clock into the future beyond which a record is flagged, in seconds: a
    #: record stamped more than this after the stream processor read it is kept (the producer's
    #: ``ts_ns`` is what users search by) and carries ``future_ns``, how far ahead it was.
    max_future_skew_s: float = 300.0


DEFAULT_LIMITS = Limits()

#: Smallest timestamp accepted: 2000-01-01T00:00:00Z in nanoseconds.
MIN_TS_NS = 946_684_800 * 1_000_000_000


def need_map(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise InvalidRecord(f"record is a {type(record).__name__}, not a map")
    return record


def need_ts(record: dict[str, Any]) -> int:
    ts = record.get("ts_ns")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise InvalidRecord("field 'ts_ns' must be an integer (nanoseconds since the epoch)")
    if ts < MIN_TS_NS:
        raise InvalidRecord(f"field 'ts_ns' {ts} is before 2000-01-01")
    return ts


def need_text(record: dict[str, Any], name: str, limits: Limits, default: str | None = None) -> str:
    value = record.get(name, default)
    if value is None:
        raise InvalidRecord(f"field {name!r} is required")
    if not isinstance(value, str):
        raise InvalidRecord(f"field {name!r} must be a string")
    if len(value) > limits.max_text_field_chars:
        raise InvalidRecord(f"field {name!r} is longer than {limits.max_text_field_chars} characters")
    return value


def need_number(value: Any, what: str) -> float:
    """A metric value as float; NaN and ±Inf are kept exactly."""
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise InvalidRecord(f"{what} must be a number, not {type(value).__name__}")


def check_name(name: Any, limits: Limits) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRecord("a metric name must be a non-empty string")
    if len(name) > limits.max_metric_name_chars:
        raise InvalidRecord(f"metric name is longer than {limits.max_metric_name_chars} characters")
    if not name.isprintable():
        raise InvalidRecord(f"metric name {name[:64]!r} has control characters")
    return name


def check_values(values: Any, limits: Limits) -> dict[str, float]:
    if not isinstance(values, dict) or not values:
        raise InvalidRecord("field 'values' must be a non-empty map of name to number")
    if len(values) > limits.max_metric_keys_per_record:
        raise InvalidRecord(f"more than {limits.max_metric_keys_per_record} values in one record")
    out: dict[str, float] = {}
    for name, value in values.items():
        out[check_name(name, limits)] = need_number(value, f"value of {str(name)[:64]!r}")
    return out


def is_finite(x: float) -> bool:
    return math.isfinite(x)
