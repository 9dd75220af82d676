"""``resources`` records: one sample of one device (``host`` or ``gpuN``).

Fields: ``ts_ns`` (int), ``device`` (str, e.g. ``host``, ``gpu0``),
``values`` (map of measurement name, unit in the name, to number).
"""

from __future__ import annotations

from typing import Any

from runstream.events.limits import Limits, check_values, need_map, need_text, need_ts


def validate(record: Any, limits: Limits) -> dict[str, Any]:
    rec = need_map(record)
    return {
        "ts_ns": need_ts(rec),
        "device": need_text(rec, "device", limits),
        "values": check_values(rec.get("values"), limits),
    }
