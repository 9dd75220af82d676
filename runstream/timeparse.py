"""Times as users write them: RFC 3339, epoch seconds, or a relative duration.

``parse_time("1h")`` means one hour before *now*; answers are given back as
RFC 3339 UTC with :func:`format_ns`.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime, timezone
from decimal import Decimal

from runstream.errors import QueryError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_EPOCH = re.compile(r"^-?\d+(?:\.\d+)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration_s(text: str) -> float:
    """Seconds in ``text`` such as ``90s``, ``15m``, ``1h``, ``7d``; raise :class:`QueryError`."""
    match = _DURATION.match(text)
    if not match:
        raise QueryError(f"{text!r} is not a duration such as 30s, 15m, 1h, 24h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch for RFC 3339, epoch seconds, or a duration ago.

    Raises :class:`QueryError` with a message that says what is accepted.
    """
    text = text.strip()
    if not text:
        raise QueryError("empty time")
    now_ns = time.time_ns() if now_ns is None else now_ns
    if _DURATION.match(text):
        return now_ns - int(parse_duration_s(text) * 1e9)
    if _EPOCH.match(text):
        seconds = Decimal(text)
        if abs(seconds) > 10**11:
            raise QueryError(f"{text!r} is not a plausible epoch time in seconds")
        return int(seconds * 1_000_000_000)
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise QueryError(
            f"{text!r} is not a time: use RFC 3339 (2026-11-23T10:00:00Z), "
            "epoch seconds, or a duration ago (1h, 24h, 7d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def format_ns(ts_ns: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-23T10:00:00.123456Z``."""
    seconds, rem = divmod(ts_ns, 1_000_000_000)
    return f"{_second_stamp(seconds)}.{rem // 1000:06d}Z"


@functools.lru_cache(maxsize=4096)
def _second_stamp(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of one UTC second (cached: records come in runs of the same second)."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
