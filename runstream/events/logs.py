"""``logs`` records: one console line or one ``logging`` record.

Fields: ``ts_ns`` (int), ``line`` (str), ``stream`` (``stdout``, ``stderr``
or ``logging``), ``level`` (``DEBUG``..``CRITICAL`` or empty when unknown),
optional ``logger``.  Lines over ``max_line_bytes`` are cut at a character
boundary and end with ``TRUNCATION_MARKER``; ``orig_bytes`` keeps the length.
"""

from __future__ import annotations

from typing import Any

from runstream.errors import InvalidRecord
from runstream.events.limits import Limits, need_map, need_text, need_ts

STREAMS = frozenset({"stdout", "stderr", "logging"})
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVEL_ALIASES = {
    "": "",
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
    "FATAL": "CRITICAL",
}
TRUNCATION_MARKER = " …[truncated]"


def normalise_level(level: Any) -> str:
    """The canonical level name for ``level``; raise :class:`InvalidRecord` if unknown."""
    if level is None:
        return ""
    if not isinstance(level, str):
        raise InvalidRecord("field 'level' must be a string")
    canonical = _LEVEL_ALIASES.get(level.upper())
    if canonical is None:
        raise InvalidRecord(f"unknown level {level[:32]!r}")
    return canonical


def truncate(line: str, max_bytes: int) -> tuple[str, int]:
    """``line`` cut to at most ``max_bytes`` UTF-8 bytes (marker included) and its original size."""
    raw = line.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return line, len(raw)
    keep = max(0, max_bytes - len(TRUNCATION_MARKER.encode()))
    cut = raw[:keep].decode("utf-8", "ignore")
    return cut + TRUNCATION_MARKER, len(raw)


def validate(record: Any, limits: Limits) -> dict[str, Any]:
    rec = need_map(record)
    ts = need_ts(rec)
    line = rec.get("line")
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    if not isinstance(line, str):
        raise InvalidRecord("field 'line' must be a string")
    orig_bytes = 0
    if len(line) * 4 > limits.max_line_bytes or "\x00" in line:
        line = line.replace("\x00", "\ufffd")
        line, size = truncate(line, limits.max_line_bytes)
        if line.endswith(TRUNCATION_MARKER):
            orig_bytes = size
    stream = rec.get("stream", "stdout")
    if stream not in STREAMS:
        raise InvalidRecord(f"field 'stream' must be one of {', '.join(sorted(STREAMS))}")
    out: dict[str, Any] = {
        "ts_ns": ts,
        "line": line,
        "stream": stream,
        "level": normalise_level(rec.get("level")),
        "logger": need_text(rec, "logger", limits, default=""),
    }
    if orig_bytes:
        out["orig_bytes"] = orig_bytes
    return out
