"""``runs`` records: a run's lifecycle as seen by one producer (one rank).

``event`` is ``start`` (with ``project``, ``name``, ``config`` map, ``tags``
list, ``host``, ``pid``, ``world_size``, ``argv``), ``heartbeat``, or
``finish`` (with ``status`` in :data:`FINAL_STATUSES`, ``exit_code``,
``reason``).  A run's status is derived from the events of all its ranks.
"""

from __future__ import annotations

from typing import Any

from runstream.errors import InvalidRecord
from runstream.events.limits import Limits, need_map, need_text, need_ts

EVENTS = frozenset({"start", "heartbeat", "finish"})
FINAL_STATUSES = ("finished", "failed", "killed")
STATUSES = ("running", *FINAL_STATUSES, "crashed")


def _text_list(value: Any, name: str, limits: Limits) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRecord(f"field {name!r} must be a list of strings")
    if sum(len(v) for v in value) > limits.max_text_field_chars * 4:
        raise InvalidRecord(f"field {name!r} is too long")
    return value


def validate(record: Any, limits: Limits) -> dict[str, Any]:
    rec = need_map(record)
    ts = need_ts(rec)
    event = rec.get("event")
    if event not in EVENTS:
        raise InvalidRecord(f"field 'event' must be one of {', '.join(sorted(EVENTS))}")
    out: dict[str, Any] = {"ts_ns": ts, "event": event}
    if event == "start":
        config = rec.get("config") or {}
        if not isinstance(config, dict):
            raise InvalidRecord("field 'config' must be a map")
        world = rec.get("world_size", 1)
        if not isinstance(world, int) or isinstance(world, bool) or world < 1:
            raise InvalidRecord("field 'world_size' must be an integer >= 1")
        pid = rec.get("pid", 0)
        out.update(
            project=need_text(rec, "project", limits, default="default") or "default",
            name=need_text(rec, "name", limits, default=""),
            config=config,
            tags=_text_list(rec.get("tags"), "tags", limits),
            host=need_text(rec, "host", limits, default=""),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
            world_size=world,
            argv=_text_list(rec.get("argv"), "argv", limits),
        )
    elif event == "finish":
        status = rec.get("status")
        if status not in FINAL_STATUSES:
            raise InvalidRecord(f"field 'status' must be one of {', '.join(FINAL_STATUSES)}")
        code = rec.get("exit_code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise InvalidRecord("field 'exit_code' must be an integer")
        out.update(status=status, exit_code=code, reason=need_text(rec, "reason", limits, default=""))
    return out
