"""Fast paths for the common, well-formed ``logs`` and ``metrics`` records.

Each checker takes one raw record and its index and returns the normalised
record (with ``"i"``) exactly as the kind's validator in
:mod:`runstream.events` would, or ``None`` when the record is not plainly
well-formed; the caller then runs the full validator, which either accepts
it (an alias level such as ``warn``, a line to truncate, a NUL to replace, an
integer metric value) or refuses it with its reason.  The checks use exact
type tests (``type(x) is int`` also rules out ``bool``), so a ``None`` never
hides a bad record and an answer is never different from the validator's;
``tests/streams/test_fastpath.py`` holds them equal on arbitrary input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runstream.events.limits import MIN_TS_NS, Limits
from runstream.events.logs import STREAMS

FastChecker = Callable[[Any, int], "dict[str, Any] | None"]

#: Level spellings accepted unchanged (the canonical names and "" / None).
_CANONICAL_LEVELS: dict[Any, str] = {
    None: "", "": "", "DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL",
}


def fast_checker(kind: str, limits: Limits) -> FastChecker | None:
    """The fast path for ``kind`` under ``limits``, or ``None`` when the kind has none."""
    if kind == "logs":
        return _logs_checker(limits)
    if kind == "metrics":
        return _metrics_checker(limits)
    return None


def _logs_checker(limits: Limits) -> FastChecker:
    # A line of at most max_line_bytes // 4 characters is at most max_line_bytes
    # UTF-8 bytes, so it never needs truncating: the validator's own test.
    max_chars = limits.max_line_bytes // 4
    max_text = limits.max_text_field_chars
    streams = STREAMS
    levels = _CANONICAL_LEVELS

    def check(rec: Any, index: int) -> dict[str, Any] | None:
        if type(rec) is not dict:
            return None
        ts = rec.get("ts_ns")
        line = rec.get("line")
        if type(ts) is not int or ts < MIN_TS_NS or type(line) is not str:
            return None
        if len(line) > max_chars or "\x00" in line:
            return None
        stream = rec.get("stream", "stdout")
        level = rec.get("level")
        logger = rec.get("logger", "")
        if type(stream) is not str or stream not in streams or type(logger) is not str or len(logger) > max_text:
            return None
        if level is not None and type(level) is not str:
            return None
        canonical = levels.get(level)
        if canonical is None:
            return None
        return {"ts_ns": ts, "line": line, "stream": stream, "level": canonical, "logger": logger, "i": index}

    return check


def _metrics_checker(limits: Limits) -> FastChecker:
    max_keys = limits.max_metric_keys_per_record
    max_name = limits.max_metric_name_chars
    # Metric names repeat on every step: remember the ones already checked
    # (bounded, so a producer inventing names cannot grow it without limit).
    good_names: set[str] = set()
    max_remembered = 4096

    def check(rec: Any, index: int) -> dict[str, Any] | None:
        if type(rec) is not dict:
            return None
        ts = rec.get("ts_ns")
        if type(ts) is not int or ts < MIN_TS_NS:
            return None
        step = rec.get("step", -1)
        if step is None:
            step = -1
        elif type(step) is not int or step < -1:
            return None
        values = rec.get("values")
        if type(values) is not dict or not values or len(values) > max_keys:
            return None
        for name, value in values.items():
            if type(value) is not float or type(name) is not str:
                return None
            if name not in good_names:
                if not name or len(name) > max_name or not name.isprintable():
                    return None
                if len(good_names) < max_remembered:
                    good_names.add(name)
        return {"ts_ns": ts, "step": step, "values": values, "i": index}

    return check
