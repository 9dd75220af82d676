"""Times as users write them."""

from __future__ import annotations

import pytest

from runstream.errors import QueryError
from runstream.timeparse import format_ns, parse_duration_s, parse_time

NOW = 1_795_000_000 * 1_000_000_000


def test_rfc3339_with_z() -> None:
    """RFC 3339 UTC parses to exact nanoseconds."""
    assert parse_time("2026-11-23T10:00:00Z") == 1_795_428_000 * 1_000_000_000


def test_rfc3339_with_offset_and_fraction() -> None:
    """Offsets and microseconds are honoured."""
    assert parse_time("2026-11-23T11:00:00.5+01:00") == 1_795_428_000 * 1_000_000_000 + 500_000_000


def test_epoch_seconds() -> None:
    """Epoch seconds, fractional ones too."""
    assert parse_time("1795428000.25") == 1_795_428_000_250_000_000


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("24h", 86400), ("7d", 604800), ("90s", 90)])
def test_relative_durations_count_back_from_now(text: str, seconds: int) -> None:
    """A duration means that long before now."""
    assert parse_time(text, now_ns=NOW) == NOW - seconds * 1_000_000_000
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["", "yesterday", "1 fortnight", "2026-13-01T00:00:00Z", "nan", "1e300"])
def test_bad_times_raise_query_error(bad: str) -> None:
    """Anything else is a QueryError saying what is accepted."""
    with pytest.raises(QueryError):
        parse_time(bad, now_ns=NOW)


def test_format_is_rfc3339_utc_with_microseconds() -> None:
    """Answers are RFC 3339 UTC with a Z."""
    assert format_ns(1_795_428_000_123_456_789) == "2026-11-23T10:00:00.123456Z"
