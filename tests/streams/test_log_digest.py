"""The log batch digest the validators hand to the detectors answers as the records it stands for."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstream import wire
from runstream.errors import DecodeError
from runstream.events import Limits
from streams.detect import RunState, on_log, on_log_levels, on_seen
from streams.digest import LogDigest, apply_log_digest, digest_logs, merge_digests
from streams.enrich import LogEnricher
from streams.validate import process

TS = 1_795_428_000 * 1_000_000_000


def _real_batches(real_logs_dir: Path, size: int = 1000) -> list[bytes]:
    """Raw ``logs`` messages of the real-log corpus, ``size`` lines each, as a producer sends them."""
    lines: list[str] = []
    for path in sorted(real_logs_dir.rglob("*")):
        if path.is_file():
            lines += [line for line in path.read_text(errors="replace").split("\n") if line]
    out = []
    for seq, off in enumerate(range(0, len(lines), size)):
        recs = [
            {"ts_ns": TS + off + k, "line": line, "stream": "stdout", "level": ""}
            for k, line in enumerate(lines[off : off + size])
        ]
        out.append(
            wire.encode(
                wire.Envelope(
                    kind="logs", producer="p", seq=seq, run="r", node="n", rank=seq % 3, sent_ns=TS, records=recs
                )
            )
        )
    return out


def _by_record(run: RunState, env: wire.Envelope) -> list[dict[str, Any]]:
    """The counts, last seen and alerts of ``env`` applied a record at a time (the per-record rules)."""
    on_log_levels(run, [rec.get("level", "") for rec in env.records])
    alerts: list[dict[str, Any]] = []
    for rec in env.records:
        alerts += on_log(rec, producer=env.producer, seq=env.seq, node=env.node, rank=env.rank)
        on_seen(run, node=env.node, rank=env.rank, ts_ns=rec["ts_ns"])
    first: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        first.setdefault(alert["key"], alert)
    return list(first.values())


def test_validator_digest_equals_the_decoded_clean_message_on_real_logs(real_logs_dir: Path) -> None:
    """The digest of the validator's envelope and that of its clean message decoded again give the run state and
    alerts that the records applied one at a time give, on every real-log batch."""
    enricher = LogEnricher()
    handed, decoded, by_record = RunState(), RunState(), RunState()
    alerts = 0
    for offset, raw in enumerate(_real_batches(real_logs_dir)):
        out = process(
            raw,
            topic="raw.logs",
            partition=0,
            offset=offset,
            limits=Limits(),
            ingest_ns=time.time_ns(),
            enricher=enricher,
            kind="logs",
        )
        assert out.clean is not None and out.clean_env is not None
        env = out.clean_env
        mine = digest_logs(
            run=env.run, producer=env.producer, seq=env.seq, node=env.node, rank=env.rank, records=env.records
        )
        back = wire.decode(out.clean)
        theirs = digest_logs(
            run=back.run, producer=back.producer, seq=back.seq, node=back.node, rank=back.rank, records=back.records
        )
        assert mine == theirs
        assert LogDigest.decode(mine.encode()) == mine  # as the log detectors read it from the digest topic
        expected = _by_record(by_record, back)
        assert apply_log_digest(handed, mine) == expected
        assert apply_log_digest(decoded, theirs) == expected
        alerts += len(expected)
    assert handed == decoded == by_record
    assert alerts > 0 and by_record.counts["errors"] > 0 and by_record.counts["warnings"] > 0


def test_merged_digests_apply_as_the_digests_one_by_one_on_real_logs(real_logs_dir: Path) -> None:
    """Per node and rank, the merge of the alert-free digests of consecutive real-log batches gives the run state
    that applying them one at a time gives (counts by level, newest stamp per rank), with no alerts."""
    enricher = LogEnricher()
    digests = []
    for offset, raw in enumerate(_real_batches(real_logs_dir, size=250)):
        out = process(
            raw,
            topic="raw.logs",
            partition=0,
            offset=offset,
            limits=Limits(),
            ingest_ns=time.time_ns(),
            enricher=enricher,
            kind="logs",
        )
        assert out.clean_env is not None
        env = out.clean_env
        digests.append(
            digest_logs(
                run=env.run, producer=env.producer, seq=env.seq, node=env.node, rank=env.rank, records=env.records
            )
        )
    plain = [d for d in digests if not d.alerts]
    one_by_one, merged = RunState(), RunState()
    for d in plain:
        apply_log_digest(one_by_one, d)
    groups: dict[int, list[LogDigest]] = {}  # in the order of their first digest, as the validator sends them
    for d in plain:
        groups.setdefault(d.rank, []).append(d)
    for rank, group in groups.items():
        assert len(group) > 1
        together = merge_digests(group)
        assert (together.producer, together.seq, together.rank) == (group[-1].producer, group[-1].seq, rank)
        assert LogDigest.decode(together.encode()) == together
        assert apply_log_digest(merged, together) == []
    assert merged == one_by_one
    assert one_by_one.counts["warnings"] > 0 and len(one_by_one.last_seen_ns) == 3


def test_merging_one_digest_keeps_it_and_its_alerts() -> None:
    """A digest merged alone is itself, alerts included (a digest with alerts is never merged with others)."""
    lines = ["Traceback (most recent call last):", "torch.OutOfMemoryError: CUDA out of memory."]
    records = [{"ts_ns": TS + k, "line": line, "level": "ERROR", "tags": ["oom"]} for k, line in enumerate(lines)]
    digest = digest_logs(run="r", producer="p", seq=4, node="n", rank=1, records=records)
    assert digest.alerts and merge_digests([digest]) is digest


def test_merged_digests_without_stamps_see_no_one() -> None:
    """Merging empty batches' digests sums zero lines and has no newest stamp."""
    empty = [digest_logs(run="r", producer="p", seq=k, node="n", rank=0, records=[]) for k in range(3)]
    together = merge_digests(empty)
    assert together.newest_ns is None and together.lines == 0 and together.seq == 2


def test_empty_batch_digest_counts_nothing_and_sees_no_one() -> None:
    """An empty batch adds zero lines and leaves last seen, nodes and ranks as they were."""
    run = RunState()
    digest = digest_logs(run="r", producer="p", seq=0, node="n", rank=0, records=[])
    assert digest.newest_ns is None and apply_log_digest(run, digest) == []
    assert run.counts == {"lines": 0} and run.last_seen_ns == {} and run.nodes == []


@pytest.mark.parametrize(
    "levels",
    [["CRITICAL", "INFO"], ["", "INFO"], ["WARNING", "ERROR", "CRITICAL", "ERROR"], ["WARNING", "WARNING"], []],
)
def test_digest_counts_each_level_whether_or_not_the_batch_holds_it(levels: list[str]) -> None:
    """Warnings count WARNING lines and errors ERROR and CRITICAL ones, zero for a level the batch lacks."""
    records = [{"ts_ns": TS + k, "level": level} for k, level in enumerate(levels)]
    digest = digest_logs(run="r", producer="p", seq=0, node="n", rank=0, records=records)
    assert (digest.lines, digest.warnings, digest.errors) == (
        len(levels),
        levels.count("WARNING"),
        levels.count("ERROR") + levels.count("CRITICAL"),
    )


def test_digest_decode_refuses_what_encode_did_not_make() -> None:
    """Bytes that are not a digest of this version (garbage, another version, a field missing or mistyped)
    raise DecodeError, which the log detector counts and skips."""
    good = digest_logs(run="r", producer="p", seq=3, node="n", rank=1, records=[{"ts_ns": TS, "level": "ERROR"}])
    doc = wire.unpack(good.encode())
    bad = [
        b"",
        b"\xc1",
        wire.pack([1, 2]),
        wire.pack({**doc, "v": 2}),
        wire.pack({k: v for k, v in doc.items() if k != "lines"}),
        wire.pack({**doc, "seq": "3"}),
        wire.pack({**doc, "alerts": [1]}),
        wire.pack({**doc, "newest_ns": 1.5}),
    ]
    for data in bad:
        with pytest.raises(DecodeError):
            LogDigest.decode(data)
    assert LogDigest.decode(good.encode()) == good and good.errors == 1


@given(st.binary(max_size=512))
def test_digest_decode_of_any_bytes_gives_a_digest_or_decode_error(data: bytes) -> None:
    """No byte sequence makes the log detector's decode raise anything but DecodeError."""
    try:
        LogDigest.decode(data)
    except DecodeError:
        pass
