"""Alert records as the detectors build them (``runstream.events.alerts`` records without ``i``)."""

from __future__ import annotations

from typing import Any


def alert_record(
    ts_ns: int, kind: str, message: str, node: str, rank: int, key: str, severity: str = "warning", **extra: Any
) -> dict[str, Any]:
    """One alert; ``key`` identifies it (deterministic: a replay builds the same key, the store keeps one)."""
    return {
        "ts_ns": ts_ns,
        "kind": kind,
        "message": message,
        "node": node,
        "rank": rank,
        "key": key,
        "severity": severity,
        **extra,
    }
