"""Query-string parameters read strictly: every value checked, every mistake named.

Pure: takes a list of ``(name, value)`` pairs and raises
:class:`~runstream.errors.QueryError` (answered as a 400) with a message that
says which parameter was wrong and what it accepts.  An unknown or repeated
parameter is an error too, so a typo (``?nmae=loss``) is never silently
ignored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterable

from runstream.errors import QueryError
from runstream.timeparse import parse_time
from runstream.wire import MAX_ID_CHARS

#: Longest free-text parameter accepted (a search phrase, a regex, a cursor).
MAX_TEXT_CHARS = 1_000

_INT = re.compile(r"^[+-]?[0-9]{1,19}$")


def _shown(value: str) -> str:
    """``value`` quoted for an error message, cut so an answer stays small."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


class Params:
    """The query parameters of one request, checked against the names it accepts."""

    def __init__(self, items: Iterable[tuple[str, str]], accepted: Collection[str]) -> None:
        self._values: dict[str, str] = {}
        for name, value in items:
            if name not in accepted:
                known = ", ".join(sorted(accepted)) or "none"
                raise QueryError(f"unknown parameter {_shown(name)}; accepted: {known}")
            if name in self._values:
                raise QueryError(f"parameter {name!r} is given more than once")
            self._values[name] = value

    def text(self, name: str, *, max_chars: int = MAX_TEXT_CHARS) -> str | None:
        """The parameter's value, or ``None`` when absent or empty."""
        value = self._values.get(name, "")
        if not value:
            return None
        if len(value) > max_chars:
            raise QueryError(f"{name} is longer than {max_chars} characters")
        if "\x00" in value:
            raise QueryError(f"{name} contains a NUL character")
        return value

    def integer(self, name: str, *, default: int | None, low: int, high: int) -> int | None:
        """An integer in ``[low, high]``; ``default`` when absent or empty."""
        value = self._values.get(name, "").strip()
        if not value:
            return default
        if not _INT.match(value) or not low <= int(value) <= high:
            raise QueryError(f"{name} must be an integer from {low} to {high}, got {_shown(value)}")
        return int(value)

    def choice(self, name: str, choices: Collection[str]) -> str | None:
        """One of ``choices`` (compared case-insensitively), or ``None`` when absent."""
        value = self.text(name)
        if value is None:
            return None
        by_lower = {c.lower(): c for c in choices}
        found = by_lower.get(value.lower())
        if found is None:
            raise QueryError(f"{name} must be one of {', '.join(choices)}, got {_shown(value)}")
        return found

    def choices(self, name: str, choices: Collection[str]) -> list[str] | None:
        """A comma-separated list of ``choices`` (``WARNING,ERROR``), or ``None`` when absent."""
        value = self.text(name)
        if value is None:
            return None
        by_lower = {c.lower(): c for c in choices}
        picked: list[str] = []
        for part in value.split(","):
            found = by_lower.get(part.strip().lower())
            if found is None:
                raise QueryError(
                    f"{name} must be one or more of {', '.join(choices)} separated by commas, "
                    f"got {_shown(part.strip())}"
                )
            if found not in picked:
                picked.append(found)
        return picked

    def time_ns(self, name: str, *, now_ns: int | None = None) -> int | None:
        """Nanoseconds since the epoch for RFC 3339, epoch seconds or a duration ago."""
        value = self.text(name, max_chars=64)
        if value is None:
            return None
        try:
            return parse_time(value, now_ns)
        except QueryError as exc:
            raise QueryError(f"{name}: {exc}") from None

    def time_range(self, *, now_ns: int | None = None) -> tuple[int | None, int | None]:
        """``since`` and ``until`` as nanoseconds; raises when ``since`` is after ``until``."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        since = self.time_ns("since", now_ns=now_ns)
        until = self.time_ns("until", now_ns=now_ns)
        if since is not None and until is not None and since > until:
            raise QueryError("since is after until")
        return since, until


def check_run_id(run_id: str) -> str:
    """``run_id`` when it could name a run; raises :class:`QueryError` otherwise."""
    if not run_id or len(run_id) > MAX_ID_CHARS or not run_id.isprintable():
        raise QueryError(f"{_shown(run_id)} is not a run id")
    return run_id
