"""Envelope building (producers.batch)."""

from __future__ import annotations

import math

import pytest

from producers.batch import Batcher
from producers.records import LogLine
from runstream.events import VALIDATORS
from runstream.events.limits import DEFAULT_LIMITS
from runstream.wire import decode

TS = 1_800_000_000_000_000_000


def batcher(**kw: object) -> Batcher:
    return Batcher(producer="p" * 32, run="run1", node="node-a", rank=3, clock=lambda: TS, **kw)  # type: ignore[arg-type]


def metrics(n: int, start: int = 0) -> list[tuple[int, int | None, dict[str, float]]]:
    return [(TS + i, i, {"loss": 1.0 / (i + 1), "acc": float(i)}) for i in range(start, start + n)]


def test_envelopes_hold_at_most_max_records_of_one_kind() -> None:
    """2500 records make envelopes of 1000, 1000 and 500, covering consecutive positions."""
    built = batcher(max_records=1000).build("metrics", 40, metrics(2500))
    assert [(b.start, b.count, b.records) for b in built.batches] == [
        (40, 1000, 1000),
        (1040, 1000, 1000),
        (2040, 500, 500),
    ]
    assert {decode(b.value).kind for b in built.batches} == {"metrics"}


def test_seq_increments_per_envelope_across_kinds() -> None:
    """seq counts the producer's envelopes from 0, whatever their kind."""
    b = batcher(max_records=2)
    seqs = [x.seq for x in b.build("metrics", 0, metrics(3)).batches]
    seqs += [x.seq for x in b.build("logs", 0, [LogLine(TS, "l", "stdout", "", "")]).batches]
    assert seqs == [0, 1, 2]
    assert [decode(x.value).seq for x in b.build("metrics", 3, metrics(1)).batches] == [3]


def test_envelope_decodes_with_identity_and_validates() -> None:
    """Every envelope decodes with runstream.wire and each record passes its validator."""
    logs = [LogLine(TS, "epoch 1", "stdout", "", ""), LogLine(TS + 1, "warn", "logging", "WARNING", "train")]
    b = batcher()
    out = b.build("metrics", 0, metrics(3)).batches + b.build("logs", 0, logs).batches
    for batch in out:
        env = decode(batch.value)
        assert (env.producer, env.run, env.node, env.rank, env.sent_ns) == (
            "p" * 32,
            "run1",
            "node-a",
            3,
            TS,
        )
        for rec in env.records:
            VALIDATORS[env.kind](rec, DEFAULT_LIMITS)
    env = decode(out[0].value)
    assert env.records[2] == {"ts_ns": TS + 2, "step": 2, "values": {"loss": 1 / 3, "acc": 2.0}}
    assert decode(out[1].value).records[1]["logger"] == "train"


def test_log_lines_are_redacted_in_the_envelope() -> None:
    """A secret in a buffered line does not leave in the envelope."""
    rows = [
        LogLine(TS, "epoch 1", "stdout", "", ""),
        LogLine(TS + 1, "password=hunter2x", "logging", "WARNING", "train"),
    ]
    (batch,) = batcher().build("logs", 0, rows).batches
    assert "hunter2x" not in decode(batch.value).records[1]["line"]


def test_metric_without_step_has_no_step_field() -> None:
    """A record logged without a step leaves 'step' out (the store uses -1)."""
    (batch,) = batcher().build("metrics", 0, [(TS, None, {"x": 1.0})]).batches
    assert decode(batch.value).records == [{"ts_ns": TS, "values": {"x": 1.0}}]


def test_nan_and_inf_survive_exactly() -> None:
    """NaN and ±Inf metric values decode as they were logged."""
    (batch,) = batcher().build("metrics", 0, [(TS, 0, {"a": math.nan, "b": math.inf, "c": -math.inf})]).batches
    values = decode(batch.value).records[0]["values"]
    assert math.isnan(values["a"]) and values["b"] == math.inf and values["c"] == -math.inf


def test_oversized_envelope_is_split_by_bytes() -> None:
    """Records that would exceed max_bytes together are split into several envelopes."""
    lines = [LogLine(TS, "x" * 1000, "stdout", "", "") for _ in range(50)]
    built = batcher(max_bytes=10_000).build("logs", 0, lines)
    assert len(built.batches) > 1
    assert all(len(b.value) <= 10_000 for b in built.batches)
    assert sum(b.records for b in built.batches) == 50
    assert [b.seq for b in built.batches] == list(range(len(built.batches)))


def test_unencodable_value_is_made_wire_safe() -> None:
    """An integer beyond 64 bits becomes a float instead of breaking the envelope."""
    (batch,) = batcher().build("metrics", 0, [(TS, 0, {"big": 1 << 70}), (TS, 1, {"ok": 1.0})]).batches
    records = decode(batch.value).records
    assert records[0]["values"]["big"] == pytest.approx(float(1 << 70))
    assert records[1]["values"]["ok"] == 1.0
