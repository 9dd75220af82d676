"""Subscription filters of the live feed: parsing them, and matching live records as the history queries do.

Sans I/O, like :mod:`ui.hub`, which applies them to every live record; the
history queries (:mod:`ui.history`) take the same :class:`Filters` as
keyword arguments.  A line the history selects must be selected live too, or
the live tail silently lacks it: :func:`live_pattern` reads a regex as
ClickHouse's RE2 does, and :func:`strip_ansi` strips what the logs table
strips for its ``text`` column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runstream.errors import QueryError
from runstream.timeparse import parse_time

if TYPE_CHECKING:
    from ui.hub import Rec

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_FILTER_CHARS = 1024
MAX_NAMES = 256

# The same escape sequences the logs table strips for its `text` column.
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()*+][0-9A-Za-z]|[=>78])")


class FeedError(ValueError):
    """A client message the feed refuses; the message says what was wrong."""


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (what log search matches against)."""
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class Filters:
    """What a subscription wants of its stream; :func:`parse_filters` builds it."""

    q: str | None = None
    regex: str | None = None
    levels: tuple[str, ...] = ()
    node: str | None = None
    rank: int | None = None
    stream: str | None = None
    names: tuple[str, ...] = ()
    device: str | None = None
    limit: int = 1000
    #: Only records from this time on (microseconds since the epoch; the ``since`` filter).
    since_us: int | None = None

    def query_args(self) -> dict[str, Any]:
        """The filters as keyword arguments of the history queries."""
        return {
            "q": self.q,
            "regex": self.regex,
            "levels": list(self.levels),
            "node": self.node,
            "rank": self.rank,
            "stream": self.stream,
            "names": list(self.names),
            "device": self.device,
        }


_FILTER_KEYS = {
    "logs": {"q", "regex", "level", "node", "rank", "stream", "since", "limit"},
    "metrics": {"names", "node", "rank", "limit"},
    "resources": {"names", "device", "node", "rank", "limit"},
    "status": set(),
    "alerts": {"limit"},
}
MAX_LIMIT = 10_000


def _text(filters: Mapping[str, Any], name: str) -> str | None:
    value = filters.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_FILTER_CHARS:
        raise FeedError(f"filter {name!r} must be a string of at most {MAX_FILTER_CHARS} characters")
    return value


#: RE2's POSIX classes (what ClickHouse's ``match`` understands inside ``[...]``) as Python class contents.
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX = re.compile(r"\[:(\^?)([a-z]+):\]")


def live_pattern(regex: str) -> re.Pattern[str]:
    """``regex`` compiled so that Python's ``re`` matches what the history's RE2 (ClickHouse ``match``) matches.

    A line the history query selects must be selected live too, or the live
    tail silently lacks it.  So POSIX classes inside brackets (``[[:digit:]]``,
    which ``re`` would read as a set of ``[:digt``) become their ranges, a bare
    ``[`` inside brackets is a literal as in RE2, and an ASCII pattern's
    ``\\d \\w \\s \\b`` are ASCII-only as in RE2.  Raises :class:`FeedError`
    for what ``re`` cannot compile, and for negated POSIX classes.
    """
    out: list[str] = []
    i, n, in_class = 0, len(regex), False
    while i < n:
        c = regex[i]
        if c == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if not in_class:
            if c == "[":
                in_class = True
                out.append(c)
                i += 1
                if regex.startswith("^", i):
                    out.append("^")
                    i += 1
                if regex.startswith("]", i):  # a leading ] is a literal
                    out.append("\\]")
                    i += 1
                continue
            out.append(c)
            i += 1
            continue
        posix = _POSIX.match(regex, i)
        if posix is not None:
            negated, name = posix.groups()
            if negated or name not in _POSIX_CLASSES:
                raise FeedError(f"regex {regex!r}: the class [:{negated}{name}:] is not supported")
            out.append(_POSIX_CLASSES[name])
            i = posix.end()
            continue
        if c == "]":
            in_class = False
        out.append("\\[" if c == "[" else c)
        i += 1
    try:
        return re.compile("".join(out), re.ASCII if regex.isascii() else 0)
    except re.error as exc:
        raise FeedError(f"regex {regex!r} is not valid: {exc}") from None


def parse_filters(stream: str, filters: Any) -> Filters:
    """Check a subscription's ``filters`` object; raise :class:`FeedError` naming what is wrong."""
    if filters is None:
        filters = {}
    if not isinstance(filters, dict):
        raise FeedError("filters must be an object")
    unknown = sorted(set(filters) - _FILTER_KEYS[stream])
    if unknown:
        raise FeedError(f"unknown filter {unknown[0]!r} for stream {stream!r}")
    regex = _text(filters, "regex")
    if regex is not None:
        live_pattern(regex)
    level = filters.get("level")
    levels: list[str] = []
    if level:
        names = level.split(",") if isinstance(level, str) else level
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise FeedError("filter 'level' must be a string or a list of strings")
        for n in names:
            up = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(n.strip().upper(), n.strip().upper())
            if up not in LEVELS:
                raise FeedError(f"level {n[:32]!r} is not one of {', '.join(LEVELS)}")
            if up not in levels:
                levels.append(up)
    rank = filters.get("rank")
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < 2**31):
        raise FeedError("filter 'rank' must be a non-negative integer")
    names_value = filters.get("names") or []
    if (
        not isinstance(names_value, list)
        or len(names_value) > MAX_NAMES
        or not all(isinstance(n, str) and 0 < len(n) <= MAX_FILTER_CHARS for n in names_value)
    ):
        raise FeedError(f"filter 'names' must be a list of at most {MAX_NAMES} names")
    limit = filters.get("limit", 1000)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIMIT:
        raise FeedError(f"filter 'limit' must be an integer from 0 to {MAX_LIMIT}")
    since_us = _since_us(filters.get("since"))
    stream_value = _text(filters, "stream")
    if stream_value is not None and stream_value not in ("stdout", "stderr", "logging"):
        raise FeedError("filter 'stream' must be stdout, stderr or logging")
    return Filters(
        q=_text(filters, "q"),
        regex=regex,
        levels=tuple(levels),
        node=_text(filters, "node"),
        rank=rank,
        stream=stream_value,
        names=tuple(names_value),
        device=_text(filters, "device"),
        limit=limit,
        since_us=since_us,
    )


def _since_us(value: Any) -> int | None:
    """The ``since`` filter as microseconds: RFC 3339, epoch seconds, or a duration ago (``1h``), as the API reads it.

    A duration is read when the subscription comes, and again when a client
    resumes with the same filters; the resume's cursor starts later anyway.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FeedError("filter 'since' must be a time: RFC 3339, epoch seconds, or a duration ago such as 1h")
    try:
        return parse_time(str(value)[:MAX_FILTER_CHARS]) // 1000
    except QueryError as exc:
        raise FeedError(f"filter 'since': {exc}") from None


def matcher(stream: str, f: Filters) -> Callable[[Rec], bool]:
    """A predicate that applies ``f`` to live records of ``stream`` as the history queries do."""
    pattern = live_pattern(f.regex) if f.regex else None
    q = f.q.lower() if f.q else None
    names = frozenset(f.names)

    def match(rec: Rec) -> bool:
        if f.since_us is not None and rec.ts_us < f.since_us:
            return False
        d = rec.data
        if f.node is not None and d.get("node") != f.node:
            return False
        if f.rank is not None and d.get("rank") != f.rank:
            return False
        if stream == "logs":
            if f.levels and d.get("level") not in f.levels:
                return False
            if f.stream is not None and d.get("stream") != f.stream:
                return False
            if q is not None or pattern is not None:
                text = strip_ansi(d.get("line", ""))
                if q is not None and q not in text.lower():
                    return False
                if pattern is not None and pattern.search(text) is None:
                    return False
        elif stream in ("metrics", "resources"):
            if names and d.get("name") not in names:
                return False
            if f.device is not None and d.get("device") != f.device:
                return False
        return True

    return match
