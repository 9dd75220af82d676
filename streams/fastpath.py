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

The batch checkers (:func:`fast_batch`) go one step further for the usual
batch where *every* record is plainly well-formed: the checks run over the
whole batch at once with C-level ``map``/``set`` operations (no Python code
per record but one small loop adding ``"i"`` and the defaults), and the
records are normalised in place.  Any doubt (one record with an unknown key,
a wrong type, a long line, an alias level) answers ``None`` before anything
was changed, and the caller goes record by record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import chain, count, repeat
from operator import itemgetter, setitem
from typing import Any

from runstream.events.limits import MIN_TS_NS, Limits
from runstream.events.logs import STREAMS

FastChecker = Callable[[Any, int], "dict[str, Any] | None"]
BatchChecker = Callable[[list[Any]], "list[dict[str, Any]] | None"]

#: Level spellings accepted unchanged (the canonical names and "" / None).
_CANONICAL_LEVELS: dict[Any, str] = {
    None: "",
    "": "",
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}


def fast_checker(kind: str, limits: Limits) -> FastChecker | None:
    """The fast path for ``kind`` under ``limits``, or ``None`` when the kind has none."""
    make = _PER_RECORD.get(kind)
    return make(limits) if make else None


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


# -- whole batches -----------------------------------------------------------------------------------

_LOG_KEYS = frozenset({"ts_ns", "line", "stream", "level", "logger"})
_METRIC_KEYS = frozenset({"ts_ns", "step", "values"})
_get_ts = itemgetter("ts_ns")
_get_line = itemgetter("line")
_get_values = itemgetter("values")
_get = dict.get  # map(dict.get, records, repeat(key), repeat(default)): a C loop (methodcaller is 3x slower)
_DICT = {dict}
_INT = {int}
_STR = {str}
_FLOAT = {float}


def fast_batch(kind: str, limits: Limits) -> BatchChecker | None:
    """The whole-batch fast path for ``kind`` under ``limits``, or ``None`` when the kind has none.

    The checker returns the batch's records normalised in place (each with
    ``"i"``, equal to what the validator returns for it) when every record is
    plainly well-formed, else ``None`` with nothing changed.
    """
    make = _PER_BATCH.get(kind)
    return make(limits) if make else None


def _logs_batch(limits: Limits) -> BatchChecker:
    max_chars = limits.max_line_bytes // 4  # see _logs_checker
    max_text = limits.max_text_field_chars
    streams = STREAMS
    levels = _CANONICAL_LEVELS.keys()

    def check(records: list[Any]) -> list[dict[str, Any]] | None:
        if not records or set(map(type, records)) != _DICT or not (keys := set().union(*records)) <= _LOG_KEYS:
            return None
        try:
            stamps = list(map(_get_ts, records))
            lines = list(map(_get_line, records))
            seen_streams = set(map(_get, records, repeat("stream"), repeat("stdout")))
            seen_levels = set(map(_get, records, repeat("level")))
            loggers = set(map(_get, records, repeat("logger"), repeat("")))
        except (KeyError, TypeError):  # a missing field; an unhashable value
            return None
        if set(map(type, stamps)) != _INT or min(stamps) < MIN_TS_NS:
            return None
        if set(map(type, lines)) != _STR or max(map(len, lines)) > max_chars or "\x00" in "".join(lines):
            return None
        if not seen_streams <= streams or not seen_levels <= levels:
            return None
        if set(map(type, loggers)) != _STR or max(map(len, loggers)) > max_text:
            return None
        if None not in seen_levels and set(map(len, records)) == {len(keys)}:  # every record has the same keys
            _fill(records, keys, _LOG_DEFAULTS)
        else:
            for index, rec in enumerate(records):
                if rec.get("level") is None:
                    rec["level"] = ""
                if "stream" not in rec:
                    rec["stream"] = "stdout"
                if "logger" not in rec:
                    rec["logger"] = ""
                rec["i"] = index
        return records

    return check


def _metrics_batch(limits: Limits) -> BatchChecker:
    max_keys = limits.max_metric_keys_per_record
    max_name = limits.max_metric_name_chars
    good_names: set[str] = set()  # as in _metrics_checker: names already checked (bounded)
    max_remembered = 4096

    def check(records: list[Any]) -> list[dict[str, Any]] | None:
        if not records or set(map(type, records)) != _DICT or not (keys := set().union(*records)) <= _METRIC_KEYS:
            return None
        try:
            stamps = list(map(_get_ts, records))
            values = list(map(_get_values, records))
        except KeyError:
            return None
        if set(map(type, stamps)) != _INT or min(stamps) < MIN_TS_NS:
            return None
        steps = list(map(_get, records, repeat("step"), repeat(-1)))
        step_types = set(map(type, steps))
        if step_types == _INT:
            if min(steps) < -1:
                return None
        elif not step_types <= {int, type(None)} or (int in step_types and min(s for s in steps if s is not None) < -1):
            return None
        if set(map(type, values)) != _DICT:
            return None
        sizes = set(map(len, values))
        if min(sizes) < 1 or max(sizes) > max_keys:
            return None
        if set(map(type, chain.from_iterable(map(dict.values, values)))) != _FLOAT:
            return None
        names = set(chain.from_iterable(values))
        if set(map(type, names)) != _STR:
            return None
        for name in names - good_names:
            if not name or len(name) > max_name or not name.isprintable():
                return None
            if len(good_names) < max_remembered:
                good_names.add(name)
        if type(None) not in step_types and set(map(len, records)) == {len(keys)}:  # the same keys everywhere
            _fill(records, keys, _METRIC_DEFAULTS)
        else:
            for index, rec in enumerate(records):
                if rec.get("step") is None:
                    rec["step"] = -1
                rec["i"] = index
        return records

    return check


#: The fields a batch checker adds when absent, in the order the per-record loops add them (a batch without
#: ``level`` takes the loop: its absence reads as ``None``, which the loop also normalises).
_LOG_DEFAULTS = (("stream", "stdout"), ("logger", ""))
_METRIC_DEFAULTS = (("step", -1),)


def _fill(records: list[dict[str, Any]], keys: set[str], defaults: tuple[tuple[str, Any], ...]) -> None:
    """Add to every record (all with the same ``keys``) each default it lacks, then ``"i"``, its index in the
    batch: the fields, and their order, the per-record loops give, set by C loops (``map`` of
    ``operator.setitem``, drained by a zero-length deque) instead of Python code per record."""
    for key, default in defaults:
        if key not in keys:
            deque(map(setitem, records, repeat(key), repeat(default)), maxlen=0)
    deque(map(setitem, records, repeat("i"), count()), maxlen=0)


#: The fast paths per kind (kinds without one always take the validator).
_PER_RECORD: dict[str, Callable[[Limits], FastChecker]] = {"logs": _logs_checker, "metrics": _metrics_checker}
_PER_BATCH: dict[str, Callable[[Limits], BatchChecker]] = {"logs": _logs_batch, "metrics": _metrics_batch}
