"""Kafka messages of the clean topics and ``alerts`` as feed records (the shapes the history reads give).

Pure: bytes or envelopes in, :class:`ui.hub.Rec` out.
"""

from __future__ import annotations

from typing import Any

from runstream import wire
from runstream.timeparse import format_ns
from ui.history import alert_rec, json_number, log_item
from ui.hub import Rec


def records_of(envelope: wire.Envelope) -> list[Rec]:
    """An envelope's records as feed records (one per value for metrics and resources).

    A log record's own ``rank``/``node`` (the stream processors set ``rank``
    from a torchrun ``[rankN]:`` prefix) win over the envelope's, as in the
    stored row: a rank or node filter must select the same lines live as
    from the history.
    """
    out: list[Rec] = []
    p, seq, node, rank = envelope.producer, envelope.seq, envelope.node, envelope.rank
    for pos, r in enumerate(envelope.records):
        if not isinstance(r, dict):
            continue
        idx = r.get("i", pos)
        ts_ns = r.get("ts_ns")
        if not isinstance(ts_ns, int) or not isinstance(idx, int):
            continue
        ts_us = ts_ns // 1000
        ts = format_ns(ts_us * 1000)
        if envelope.kind == "logs":
            own_rank, own_node = r.get("rank"), r.get("node")
            out.append(
                Rec(
                    (p, seq, idx, 0),
                    ts_us,
                    log_item(
                        ts_us,
                        own_node if isinstance(own_node, str) else node,
                        own_rank if isinstance(own_rank, int) and not isinstance(own_rank, bool) else rank,
                        r.get("stream", "stdout"),
                        r.get("level", ""),
                        r.get("logger", ""),
                        str(r.get("line", "")),
                    ),
                )
            )
        elif envelope.kind in ("metrics", "resources"):
            values = r.get("values")
            if not isinstance(values, dict):
                continue
            label = ("step", r.get("step", -1)) if envelope.kind == "metrics" else ("device", r.get("device", ""))
            for sub, (name, value) in enumerate(values.items()):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                out.append(
                    Rec(
                        (p, seq, idx, sub),
                        ts_us,
                        {
                            "ts": ts,
                            "name": name,
                            label[0]: label[1],
                            "value": json_number(float(value)),
                            "node": node,
                            "rank": rank,
                        },
                    )
                )
        elif envelope.kind == "runs":
            item = {"ts": ts, "event": r.get("event"), "node": node, "rank": rank}
            for key in ("status", "exit_code", "reason", "name", "project"):
                if r.get(key) not in (None, ""):
                    item[key] = r[key]
            out.append(Rec((p, seq, idx, 0), ts_us, item))
    return out


def alerts_of(value: bytes | None) -> tuple[str, list[Rec]]:
    """The run id and alert records of an ``alerts`` message (an envelope or one alert map)."""
    doc = wire.unpack(value or b"")
    if not isinstance(doc, dict):
        return "", []
    run = doc.get("run") or doc.get("run_id") or ""
    records: list[Any] = doc["records"] if isinstance(doc.get("records"), list) else [doc]
    out = []
    for r in records:
        if not isinstance(r, dict) or not isinstance(r.get("ts_ns"), int):
            continue
        out.append(
            alert_rec(
                r["ts_ns"] // 1000,
                str(r.get("kind", "")),
                str(r.get("message", "")),
                str(r.get("node", doc.get("node", ""))),
                int(r.get("rank", doc.get("rank", 0)) or 0),
            )
        )
    return str(run), out
