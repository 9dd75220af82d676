"""Raw batch validation: good records forwarded, each bad one dead-lettered with a reason."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import deadletter, wire
from runstream.events import Limits
from streams.validate import process

LIMITS = Limits(max_line_bytes=64)
TS = 1_795_428_000 * 1_000_000_000


def _raw(kind: str, records: Sequence[object], **over: object) -> bytes:
    doc = wire.Envelope(
        kind=kind, producer="p", seq=0, run="run1", node="n", rank=0, sent_ns=TS, records=list(records)
    ).to_map()
    doc.update(over)
    return wire.pack(doc)


def _run(value: bytes | None) -> tuple[wire.Envelope | None, list[dict[str, Any]]]:
    out = process(value, topic="runstream.logs", partition=1, offset=42, limits=LIMITS, ingest_ns=TS)
    env = wire.decode(out.clean) if out.clean else None
    return env, [deadletter.parse(d) for d in out.dead]


def test_good_batch_passes_whole_with_original_indexes() -> None:
    """Every valid record is forwarded, tagged with its index, with ingest time set."""
    env, dead = _run(_raw("logs", [{"ts_ns": TS, "line": "a"}, {"ts_ns": TS + 1, "line": "b", "level": "warn"}]))
    assert dead == [] and env is not None
    assert [r["i"] for r in env.records] == [0, 1]
    assert env.records[1]["level"] == "WARNING" and env.ingest_ns == TS


def test_bad_record_goes_to_dlq_and_rest_of_batch_survives() -> None:
    """One bad record is dead-lettered with reason and position; its neighbours are kept."""
    env, dead = _run(
        _raw("logs", [{"ts_ns": TS, "line": "ok"}, {"ts_ns": "x", "line": "bad"}, {"ts_ns": TS, "line": "ok2"}])
    )
    assert env is not None and [r["line"] for r in env.records] == ["ok", "ok2"]
    assert [r["i"] for r in env.records] == [0, 2]
    assert len(dead) == 1 and dead[0]["index"] == 1 and "ts_ns" in dead[0]["reason"]
    assert (dead[0]["topic"], dead[0]["partition"], dead[0]["offset"]) == ("runstream.logs", 1, 42)


def test_garbage_bytes_become_one_dead_letter() -> None:
    """Bytes that are not an envelope produce one dead letter and no output."""
    env, dead = _run(b"\x00\xffnot msgpack at all")
    assert env is None and len(dead) == 1 and dead[0]["index"] == -1
    assert "malformed" in dead[0]["reason"]


def test_unknown_major_version_is_dead_lettered_as_unsupported() -> None:
    """A v2 envelope is refused as unsupported."""
    env, dead = _run(_raw("logs", [], v=2))
    assert env is None and dead[0]["reason"].startswith("unsupported")


def test_long_line_is_truncated_with_marker_and_original_size() -> None:
    """A line over max_line_bytes is cut, marked, and its original length kept."""
    env, _ = _run(_raw("logs", [{"ts_ns": TS, "line": "é" * 100}]))
    assert env is not None
    rec = env.records[0]
    assert rec["line"].endswith("[truncated]") and len(rec["line"].encode()) <= 64
    assert rec["orig_bytes"] == 200


def test_metric_nan_and_inf_are_kept() -> None:
    """NaN and Inf metric values pass validation unchanged."""
    record = {"ts_ns": TS, "step": 1, "values": {"loss": float("nan"), "g": -math.inf}}
    env, dead = _run(_raw("metrics", [record]))
    assert dead == [] and env is not None
    assert math.isnan(env.records[0]["values"]["loss"]) and env.records[0]["values"]["g"] == -math.inf


def test_metric_with_non_numeric_value_is_refused() -> None:
    """A string metric value is a bad record."""
    env, dead = _run(_raw("metrics", [{"ts_ns": TS, "step": 1, "values": {"loss": "0.3"}}]))
    assert env is None and "must be a number" in dead[0]["reason"]


def test_finish_event_needs_a_known_status() -> None:
    """A run finish with an unknown status is refused."""
    env, dead = _run(_raw("runs", [{"ts_ns": TS, "event": "finish", "status": "exploded"}]))
    assert env is None and "status" in dead[0]["reason"]


def test_too_many_records_refuses_the_batch() -> None:
    """A batch over max_records_per_batch is refused whole, with the limit named."""
    value = _raw("logs", [{"ts_ns": TS, "line": "x"}] * 3)
    out = process(value, topic="t", partition=0, offset=0, limits=Limits(max_records_per_batch=2))
    assert out.clean is None and "more than 2" in deadletter.parse(out.dead[0])["reason"]


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["logs", "metrics", "runs", "resources", "evals"]), st.lists(_json, max_size=8))
def test_any_records_never_raise_and_are_all_accounted_for(kind: str, records: list[object]) -> None:
    """Whatever the records, each is either forwarded or dead-lettered, exactly once."""
    out = process(_raw(kind, records), topic="t", partition=0, offset=0, limits=LIMITS)
    assert out.clean_records + len(out.dead) == len(records)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_never_raise(value: bytes) -> None:
    """Any byte sequence yields an outcome, never an exception."""
    out = process(value, topic="t", partition=0, offset=0, limits=LIMITS)
    assert out.clean is not None or len(out.dead) == 1


def test_far_future_records_are_kept_and_flagged() -> None:
    """A record stamped over max_future_skew_s after ingest is kept with future_ns; one within it is not flagged."""
    skew_ns = int(LIMITS.max_future_skew_s * 1e9)
    records = [
        {"ts_ns": TS + skew_ns, "line": "at the limit"},
        {"ts_ns": TS + skew_ns + 1, "line": "ahead"},
        {"ts_ns": TS - 86_400 * 10**9, "line": "a day late"},
    ]
    out = process(_raw("logs", records), topic="runstream.logs", partition=0, offset=0, limits=LIMITS, ingest_ns=TS)
    assert out.clean is not None and out.dead == []
    env = wire.decode(out.clean)
    assert [r.get("future_ns") for r in env.records] == [None, skew_ns + 1, None]
    assert out.flagged == {"future_ts": 1}


def test_far_future_flag_applies_to_every_kind() -> None:
    """Metrics far ahead of ingest time are flagged the same way."""
    ahead = TS + 3_600 * 10**9
    out = process(
        _raw("metrics", [{"ts_ns": ahead, "step": 1, "values": {"loss": 1.0}}]),
        topic="t",
        partition=0,
        offset=0,
        limits=LIMITS,
        ingest_ns=TS,
    )
    assert out.clean is not None and wire.decode(out.clean).records[0]["future_ns"] == 3_600 * 10**9
