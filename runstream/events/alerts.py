"""``alerts`` records: something the stream processors detected in a run.

Fields: ``ts_ns`` (int), ``kind`` (one of :data:`KINDS`), ``message`` (str),
``node`` (str), ``rank`` (int), ``key`` (str: a deterministic id of the
alert, so a replay or two workers never show one alert twice; the store keeps
at most one alert per run and key), ``severity`` (``warning`` or ``error``),
optional ``metric`` (str) and ``value`` (number, NaN/±Inf kept).
"""

from __future__ import annotations

from typing import Any

from runstream.errors import InvalidRecord
from runstream.events.limits import Limits, need_map, need_number, need_text, need_ts

KINDS = frozenset(
    {
        "nan_loss",
        "loss_spike",
        "gpu_idle",
        "oom",
        "nccl_error",
        "nccl_timeout",
        "segfault",
        "killed",
        "silent_rank",
        "straggler",
        "stalled",
    }
)
SEVERITIES = frozenset({"warning", "error"})


def validate(record: Any, limits: Limits) -> dict[str, Any]:
    rec = need_map(record)
    kind = rec.get("kind")
    if kind not in KINDS:
        raise InvalidRecord(f"field 'kind' must be one of {', '.join(sorted(KINDS))}")
    severity = rec.get("severity", "warning")
    if severity not in SEVERITIES:
        raise InvalidRecord("field 'severity' must be 'warning' or 'error'")
    rank = rec.get("rank", -1)
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise InvalidRecord("field 'rank' must be an integer")
    key = need_text(rec, "key", limits)
    if not key:
        raise InvalidRecord("field 'key' must be a non-empty string")
    out: dict[str, Any] = {
        "ts_ns": need_ts(rec),
        "kind": kind,
        "message": need_text(rec, "message", limits, default=""),
        "node": need_text(rec, "node", limits, default=""),
        "rank": rank,
        "key": key,
        "severity": severity,
    }
    if "metric" in rec:
        out["metric"] = need_text(rec, "metric", limits)
    if "value" in rec:
        out["value"] = need_number(rec["value"], "field 'value'")
    return out
