"""``metrics`` records: the values one ``run.log(...)`` call logged.

Fields: ``ts_ns`` (int), ``step`` (int >= 0, or absent: the store then uses
-1), ``values`` (map of metric name to number; NaN and ±Inf are kept).
"""

from __future__ import annotations

from typing import Any

from runstream.errors import InvalidRecord
from runstream.events.limits import Limits, check_values, need_map, need_ts


def validate(record: Any, limits: Limits) -> dict[str, Any]:
    rec = need_map(record)
    ts = need_ts(rec)
    step = rec.get("step", -1)
    if step is None:
        step = -1
    if not isinstance(step, int) or isinstance(step, bool) or step < -1:
        raise InvalidRecord("field 'step' must be an integer >= 0")
    return {"ts_ns": ts, "step": step, "values": check_values(rec.get("values"), limits)}
