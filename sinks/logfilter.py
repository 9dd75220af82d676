"""The WHERE clause of a log search: pure, every value a bound ``{name:Type}`` parameter.

Shared by the page of lines, the histogram and the project-wide search, so
that all three count the same lines.  Case folding: an ASCII ``q`` matches
ASCII letters of either case (``lower`` on both sides, the form the text
index prunes with) and leaves every other character as it is; a ``q`` with
non-ASCII characters is compared with ClickHouse's UTF-8 case-insensitive
search, which folds each code point to its simple lower case (no ``ß`` →
``ss`` expansion).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runstream.errors import InvalidRecord, QueryError
from runstream.events.logs import STREAMS, normalise_level

#: Longest tag accepted in a filter (tags come from a small documented set).
MAX_TAG_CHARS = 64


def like_pattern(text: str) -> str:
    """A LIKE pattern matching any string that contains ``text`` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def levels_of(level: str | Sequence[str] | None) -> list[str]:
    """Canonical level names from one name, a comma-separated list or a sequence."""
    if not level:
        return []
    names = level.split(",") if isinstance(level, str) else list(level)
    out: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        try:
            canonical = normalise_level(name)
        except InvalidRecord:
            raise QueryError(f"level {name[:32]!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL") from None
        if canonical not in out:
            out.append(canonical)
    return out


def time_range(cond: list[str], params: dict[str, Any], since_ns: int | None, until_ns: int | None) -> None:
    """Add inclusive ``since``/``until`` bounds on ``ts`` (rounded inwards to whole microseconds)."""
    if since_ns is not None:
        cond.append("ts >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')")
        params["since"] = -((-since_ns) // 1000)
    if until_ns is not None:
        cond.append("ts <= fromUnixTimestamp64Micro({until:Int64}, 'UTC')")
        params["until"] = until_ns // 1000


def log_filter(
    *,
    q: str | None = None,
    regex: str | None = None,
    level: str | Sequence[str] | None = None,
    node: str | None = None,
    rank: int | None = None,
    stream: str | None = None,
    tag: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Conditions and parameters for the filters given (the run or project is the caller's).

    Raises :class:`QueryError` for an unknown level or stream, a rank out of
    Int32 or a tag that is too long.  ``regex`` is not compiled here.
    """
    cond: list[str] = []
    params: dict[str, Any] = {}
    if q:
        if q.isascii():
            cond.append("lower(text) LIKE {q_like:String}")
            params["q_like"] = like_pattern(q.lower())
        else:
            cond.append("positionCaseInsensitiveUTF8(text, {q:String}) > 0")
            params["q"] = q
    if regex:
        cond.append("match(text, {re:String})")
        params["re"] = regex
    levels = levels_of(level)
    if levels:
        cond.append("level IN {levels:Array(String)}")
        params["levels"] = levels
    if node:
        cond.append("node = {node:String}")
        params["node"] = node
    if rank is not None:
        if not isinstance(rank, int) or isinstance(rank, bool) or not -(2**31) <= rank < 2**31:
            raise QueryError("rank must be an integer between -2147483648 and 2147483647")
        cond.append("rank = {rank:Int32}")
        params["rank"] = rank
    if stream:
        if stream not in STREAMS:
            raise QueryError(f"stream must be one of {', '.join(sorted(STREAMS))}")
        cond.append("stream = {stream:String}")
        params["stream"] = stream
    if tag:
        if len(tag) > MAX_TAG_CHARS:
            raise QueryError(f"tag is longer than {MAX_TAG_CHARS} characters")
        cond.append("has(tags, {tag:String})")
        params["tag"] = tag
    time_range(cond, params, since_ns, until_ns)
    return cond, params


def bounded(value: int, low: int, high: int | None, what: str = "value") -> int:
    """``value`` when it is an integer (not a bool) from ``low`` to ``high`` (None: no top); else QueryError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise QueryError(f"{what} must be an integer")
    if high is not None and not low <= value <= high:
        raise QueryError(f"{what} must be between {low} and {high}")
    if value < low:
        raise QueryError(f"{what} must be at least {low}")
    return value
