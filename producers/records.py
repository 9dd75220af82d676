"""Pure record shaping: what the buffer holds, and the maps that go on the wire.

The hot path stores tuples (metrics) or :class:`LogLine` structs (logs); the
sender turns them into record maps shaped as :mod:`runstream.events`
validates them.  Lifecycle records are built here too, bounded to the
validators' limits so that a long ``argv`` or a huge config never gets the
whole record refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from producers.redact import candidate, redact_argv, redact_text, redact_value
from runstream.events.limits import DEFAULT_LIMITS

#: A metrics item in the buffer: (ts_ns, step or None, {name: number}).
MetricItem = tuple[int, "int | None", dict[str, Any]]

_TEXT_MAX = DEFAULT_LIMITS.max_text_field_chars
_LIST_MAX = DEFAULT_LIMITS.max_text_field_chars * 4
#: Longest metric name ``run.log`` takes (the validators' limit).
NAME_MAX = DEFAULT_LIMITS.max_metric_name_chars
_INT64 = (-(1 << 63), (1 << 64) - 1)


class InvalidValue(Exception):
    """A value given to ``run.log`` is not a number (never raised to the caller)."""


def to_number(value: Any) -> float | int:
    """``value`` as an int or float, for numpy scalars, 0-d tensors, bools and the like.

    Calls ``value.item()`` (or ``float(value)``): for a CUDA tensor that is
    one device synchronisation.  Raises :class:`InvalidValue` for text, containers and
    tensors of more than one element.
    """
    cls = value.__class__
    if cls is float:
        return value  # type: ignore[no-any-return]
    if cls is int:
        return value if _INT64[0] <= value <= _INT64[1] else float(value)  # type: ignore[no-any-return,unused-ignore]
    if isinstance(value, (str, bytes, bytearray)) or value is None:
        raise InvalidValue(f"a {cls.__name__} is not a number")
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):  # IntEnum, numpy ints that subclass int
        return to_number(int(value))
    size = getattr(value, "size", None)
    if size is not None and not isinstance(size, int):
        size = getattr(value, "numel", lambda: None)()  # torch: .size is a method
    if size is not None and size != 1:
        raise InvalidValue(f"a {cls.__name__} of {size} elements is not a number")
    item = getattr(value, "item", None)  # numpy / torch scalars and one-element arrays
    try:
        if callable(item) and size is not None:
            scalar = item()
            if isinstance(scalar, (int, float)):
                return to_number(scalar)
        return float(value)
    except (TypeError, ValueError, RuntimeError, ArithmeticError) as exc:
        raise InvalidValue(f"a {cls.__name__} is not a number") from exc


def coerce_values(values: Any, prefix: str = "") -> tuple[dict[str, float | int], list[str]]:
    """The numeric values of a ``run.log`` map, flattened, and the names refused.

    Nested maps become ``outer/inner`` names.  A name that is not text, is
    empty or too long, or whose value is no number, is left out and reported.
    """
    out: dict[str, float | int] = {}
    bad: list[str] = []
    if not isinstance(values, Mapping):
        return out, [f"<{type(values).__name__}>"]
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            bad.append(repr(key)[:64])
            continue
        name = prefix + key
        if isinstance(value, Mapping):
            sub, sub_bad = coerce_values(value, name + "/")
            out.update(sub)
            bad.extend(sub_bad)
            continue
        if len(name) > NAME_MAX or not name.isprintable():
            bad.append(name[:64])
            continue
        try:
            out[name] = to_number(value)
        except InvalidValue:
            bad.append(name[:64])
    return out, bad


class LogLine(msgspec.Struct, omit_defaults=True, gc=False):
    """One log line in the buffer; MessagePack encodes it as the ``logs`` record map itself.

    The same bytes as ``{"ts_ns", "line", "stream", "level"}`` plus ``"logger"``
    when it is not empty (fields in that order; a default is left out).  A
    struct, not a dict or a tuple: built at C speed from columns
    (``map(LogLine, ...)``), encoded without a per-record map, and not tracked
    by the cyclic garbage collector (it holds only text and an integer), so a
    backlog of lines does not make every collection longer.
    """

    ts_ns: int
    line: str
    stream: str
    level: str
    logger: str = ""


def log_line(ts_ns: int, line: str, stream: str, level: str, logger: str) -> LogLine:
    """A :class:`LogLine`, its logger name bounded to the validators' text limit."""
    return LogLine(ts_ns, line, stream, level, logger[:_TEXT_MAX] if logger else "")


def plain_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every number a plain ``int`` or ``float`` (the map itself when already so).

    ``run.log``'s fast path lets through what sums to a float (``bool``, int
    and float subclasses, ``Fraction``); they are made plain here, on the
    sender's thread.  A value that is no number after all is left out.
    """
    for v in values.values():
        if v.__class__ is not float and v.__class__ is not int:
            break
    else:
        return values
    out: dict[str, Any] = {}
    for name, value in values.items():
        try:
            out[name] = to_number(value)
        except InvalidValue:
            continue
    return out


def metric_records(items: Sequence[MetricItem]) -> list[dict[str, Any]]:
    """Each item's ``metrics`` record map, values made plain (one comprehension: no call per record)."""
    return [
        {"ts_ns": ts, "values": plain_values(values)}
        if step is None
        else {"ts_ns": ts, "step": step, "values": plain_values(values)}
        for ts, step, values in items
    ]


#: How a run of buffered items of each kind becomes its record maps.
TO_RECORDS: dict[str, Callable[[Sequence[Any]], list[Any]]] = {
    "metrics": metric_records,
    "logs": list,  # LogLine structs encode as the record maps themselves
    "runs": list,
    "resources": list,
    "evals": list,
}


def to_wire_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain maps, lists, text and numbers that MessagePack (and JSON) can carry.

    Unknown objects become their ``str``; integers beyond 64 bits become
    floats; recursion stops (as text) below 16 levels.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value) if _INT64[0] <= value <= _INT64[1] else float(value)
    if isinstance(value, float):
        return float(value)
    if depth >= 16:
        return str(value)[:_TEXT_MAX]
    if isinstance(value, Mapping):
        return {str(k): to_wire_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire_safe(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")[:_TEXT_MAX]
    if isinstance(value, msgspec.Struct):
        return to_wire_safe(msgspec.structs.asdict(value), depth + 1)
    item = getattr(value, "item", None)  # numpy / torch scalars
    size = getattr(value, "size", None)
    if callable(item) and (size == 1 or size is None or callable(size)):
        try:
            return to_wire_safe(item(), depth + 1)
        except Exception:  # noqa: BLE001 - not a scalar after all
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return to_wire_safe(tolist(), depth + 1)
        except Exception:  # noqa: BLE001
            pass
    if hasattr(value, "__dict__") and not callable(value):
        return to_wire_safe(vars(value), depth + 1)
    return str(value)[:_TEXT_MAX]


def _text(value: Any, default: str = "") -> str:
    return (default if value is None else str(value))[:_TEXT_MAX]


def _text_list(values: Any) -> list[str]:
    out: list[str] = []
    total = 0
    for v in values or ():
        s = str(v)[:_TEXT_MAX]
        if total + len(s) > _LIST_MAX:
            break
        out.append(s)
        total += len(s)
    return out


def start_record(
    *,
    project: str,
    name: str,
    config: Any,
    tags: Any,
    host: str,
    pid: int,
    world_size: int,
    argv: list[str],
    ts_ns: int | None = None,
) -> dict[str, Any]:
    """A ``runs`` ``start`` record (config made wire-safe, text bounded)."""
    cfg = to_wire_safe(config) if config is not None else {}
    if not isinstance(cfg, dict):
        cfg = {"value": cfg}
    return {
        "ts_ns": time.time_ns() if ts_ns is None else ts_ns,
        "event": "start",
        "project": _text(project) or "default",
        "name": _text(name),
        "config": cfg,
        "tags": _text_list(tags),
        "host": _text(host),
        "pid": int(pid),
        "world_size": max(1, int(world_size)),
        "argv": _text_list(argv),
    }


def heartbeat_record(ts_ns: int | None = None) -> dict[str, Any]:
    return {"ts_ns": time.time_ns() if ts_ns is None else ts_ns, "event": "heartbeat"}


def finish_record(status: str, exit_code: int | None, reason: str, ts_ns: int | None = None) -> dict[str, Any]:
    return {
        "ts_ns": time.time_ns() if ts_ns is None else ts_ns,
        "event": "finish",
        "status": status,
        "exit_code": exit_code,
        "reason": _text(reason),
    }


def redact_log(record: dict[str, Any]) -> int:
    """Redact secrets in a ``logs`` record's line, in place; return how many spans were replaced.

    The cheap :func:`producers.redact.candidate` check comes first: a line
    without a trigger word costs a lower-casing and a few substring tests.
    """
    line = record["line"]
    if not candidate(line):
        return 0
    record["line"], n = redact_text(line)
    return n


def redact_run(record: dict[str, Any]) -> int:
    """Redact secrets in a ``runs`` record, in place; return how many spans were replaced.

    A ``start`` record's name, tags, config and argv (the value after a
    ``--password``-like flag included), a ``finish`` record's reason.
    """
    event = record.get("event")
    total = 0
    if event == "start":
        for field_name in ("name", "project"):
            value = record.get(field_name)
            if isinstance(value, str):
                record[field_name], n = redact_text(value)
                total += n
        if isinstance(record.get("tags"), list):
            record["tags"], n = redact_value(record["tags"])
            total += n
        if isinstance(record.get("config"), dict):
            record["config"], n = redact_value(record["config"])
            total += n
        if isinstance(record.get("argv"), list):
            record["argv"], n = redact_argv([str(a) for a in record["argv"]])
            total += n
    elif event == "finish" and isinstance(record.get("reason"), str):
        record["reason"], n = redact_text(record["reason"])
        total += n
    return total


#: How records of a kind are redacted before they are encoded (kinds not named carry no free text).
REDACT: dict[str, Callable[[dict[str, Any]], int]] = {"logs": redact_log, "runs": redact_run}


def level_name(levelno: int) -> str:
    """The canonical level (``DEBUG``..``CRITICAL``) of a ``logging`` level number."""
    if levelno >= 50:
        return "CRITICAL"
    if levelno >= 40:
        return "ERROR"
    if levelno >= 30:
        return "WARNING"
    if levelno >= 20:
        return "INFO"
    return "DEBUG"
