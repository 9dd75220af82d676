"""``evals`` records: an evaluation artefact (confusion matrix, PR curve, table).

Fields: ``ts_ns`` (int), ``name`` (str), ``type`` (one of :data:`TYPES`),
``data`` (a map whose shape depends on ``type``; stored as JSON).
"""

from __future__ import annotations

from typing import Any

from runstream.errors import InvalidRecord
from runstream.events.limits import Limits, need_map, need_text, need_ts

TYPES = frozenset({"confusion_matrix", "pr_curve", "table", "row", "list", "value"})


def validate(record: Any, limits: Limits) -> dict[str, Any]:
    rec = need_map(record)
    kind = rec.get("type")
    if kind not in TYPES:
        raise InvalidRecord(f"field 'type' must be one of {', '.join(sorted(TYPES))}")
    data = rec.get("data")
    if not isinstance(data, dict):
        raise InvalidRecord("field 'data' must be a map")
    return {"ts_ns": need_ts(rec), "name": need_text(rec, "name", limits), "type": kind, "data": data}
