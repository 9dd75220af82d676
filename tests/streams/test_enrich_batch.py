"""The batch enrichment of streams.enrich (line-shape memo, cooking per batch) changes no per-line answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import extract, levels, signatures
from streams.enrich import FactsMemo, LogEnricher
from streams.tracebacks import TracebackGrouper


def _corpus(real_logs_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(real_logs_dir.rglob("*")):
        if path.is_file():
            lines += [line for line in path.read_text(errors="replace").split("\n") if line]
    return lines


def _enrich_all(
    enricher: LogEnricher, lines: list[str], size: int = 1000, producer: str = "p"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records of ``lines`` enriched in batches of ``size``, and the metric records extracted."""
    records = [
        {"ts_ns": i, "line": line, "stream": "stdout", "level": "", "logger": "", "i": i % size}
        for i, line in enumerate(lines)
    ]
    metrics = []
    for off in range(0, len(records), size):
        metrics += enricher.enrich(producer, off // size, 0, records[off : off + size])
    return records, metrics


def _assert_as_per_line(records: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> int:
    """Each record's level, tags and rank, and the metrics, are what the per-line functions give; returns how
    many metric records there are."""
    expected_metrics = []
    for rec in records:
        text, rank = levels.strip_decorations(rec["line"])
        assert rec["level"] == levels.detect(text), rec["line"][:200]
        assert rec.get("tags", []) == signatures.tags_of(text), rec["line"][:200]
        assert rec.get("rank") == rank
        found = extract.extract(text)
        if found is not None:
            expected_metrics.append((rec["ts_ns"], found[0], repr(found[1]), rec["i"]))
    assert [(m["ts_ns"], m["step"], repr(m["values"]), m["i"]) for m in metrics] == expected_metrics  # repr: NaN
    assert all(m["source"] == "log" and list(m) == ["ts_ns", "step", "values", "i", "source"] for m in metrics)
    return len(expected_metrics)


@pytest.mark.parametrize("max_shapes", [4096, 64])
def test_batch_enrichment_equals_per_line_functions_on_real_logs(real_logs_dir: Path, max_shapes: int) -> None:
    """Level, tags, rank and extracted metrics equal the per-line functions on every real log line, on first
    sight and again when the memo knows the lines' shapes (a small memo: after evictions)."""
    lines = _corpus(real_logs_dir)
    enricher = LogEnricher(memo=FactsMemo(max_shapes=max_shapes))
    first = _enrich_all(enricher, lines)
    assert len(enricher.memo) <= max_shapes
    again = _enrich_all(enricher, lines, size=777)
    assert _assert_as_per_line(*first) > 100
    assert _assert_as_per_line(*again) > 100


_TOKENS = [
    "exitcode: ",
    "-9",
    "-1",
    "9",
    "19",
    "0",
    "7",
    " ",
    "  ",
    "Killed",
    "SIGKILL",
    "loss",
    "loss=",
    "step",
    "step:",
    "iter ",
    ": ",
    "nan",
    "inf",
    "is ",
    "INFO",
    "WARNING",
    "ERROR:",
    "W1212 16:13:33.676 ",
    "[E102 15:45:34.86 x.cpp:4115]",
    "Traceback (most recent call last):",
    "CUDA out of memory",
    "NCCL error",
    "{'loss': ",
    "}",
    ", ",
    "'",
    "lr=3e-4",
    "x",
    "\t",
    "é",
    "[rank3]: ",
    "\x1b[31m",
    "RuntimeError: ",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.lists(st.sampled_from(_TOKENS), max_size=10).map("".join), min_size=1, max_size=12),
        min_size=1,
        max_size=6,
    )
)
def test_memo_answers_as_per_line_functions_on_lines_differing_in_digits(batches: list[list[str]]) -> None:
    """Lines that differ only in their digits (``exitcode: -9`` against ``-1``, a 9 inside a number) get the
    per-line functions' answers from one enricher, whatever the batches hold and in whatever order."""
    enricher = LogEnricher()
    for seq, lines in enumerate(batches):
        for variant in (lines, [line.replace("1", "9") for line in lines], [line.replace("9", "1") for line in lines]):
            records = [
                {"ts_ns": i, "line": line, "stream": "stdout", "level": "", "logger": "", "i": i}
                for i, line in enumerate(variant)
            ]
            metrics = enricher.enrich(f"p{seq}", seq, 0, records)
            _assert_as_per_line(records, metrics)


def test_facts_memo_is_bounded_and_skips_long_lines() -> None:
    """The memo keeps at most max_shapes shapes and never a line longer than max_shape_bytes."""
    enricher = LogEnricher(memo=FactsMemo(max_shapes=10, max_shape_bytes=50))
    lines = [f"{word} loss={k}.5" for k in range(3) for word in "abcdefghijklmnopqrstuvwxyz"] + ["y" * 60 + " INFO"]
    records, metrics = _enrich_all(enricher, lines, size=7)
    assert 0 < len(enricher.memo) <= 10
    assert len(metrics) == len(lines) - 1 and records[-1]["level"] == "INFO"
    _assert_as_per_line(records, metrics)


def test_grouper_knows_which_producers_have_an_open_traceback() -> None:
    """open_for is true from a traceback's first line until it closes or is forgotten."""
    grouper = TracebackGrouper(max_keys=2)
    grouper.group_of("a", 0, 0, 0, "Traceback (most recent call last):")
    grouper.group_of("a", 1, 0, 1, "Traceback (most recent call last):")
    assert grouper.open_for("a") and not grouper.open_for("b")
    grouper.group_of("a", 0, 0, 2, "  File 'x.py', line 1")
    grouper.group_of("a", 0, 0, 3, "ValueError: no")
    grouper.group_of("a", 0, 0, 4, "next line")  # closes rank 0's; rank 1's stays open
    assert grouper.open_for("a")
    grouper.group_of("b", 0, 0, 0, "Traceback (most recent call last):")
    grouper.group_of("c", 0, 0, 0, "Traceback (most recent call last):")  # max_keys: a's oldest key goes
    assert not grouper.open_for("a") and grouper.open_for("b") and grouper.open_for("c")


def _groups_per_line(records: list[dict[str, Any]], batch_of: list[int], producer: str = "p") -> list[str]:
    """The group of each record by the per-line grouper (``batch_of[k]``: the seq of record k's batch)."""
    grouper = TracebackGrouper()
    groups = []
    for rec, seq in zip(records, batch_of, strict=True):
        text, rank = levels.strip_decorations(rec["line"])
        groups.append(grouper.group_of(producer, -1 if rank is None else rank, seq, rec["i"], text))
    return groups


@pytest.mark.parametrize("size", [1000, 37])
def test_batch_traceback_groups_equal_per_line_grouper_on_real_logs(real_logs_dir: Path, size: int) -> None:
    """Every real log line gets the traceback group the per-line grouper gives it, whatever the batch size
    (the batch path skips the lines before a traceback starts)."""
    lines = _corpus(real_logs_dir)
    records, _ = _enrich_all(LogEnricher(), lines, size=size)
    expected = _groups_per_line(records, [k // size for k in range(len(records))])
    assert [rec.get("group", "") for rec in records] == expected
    assert sum(map(bool, expected)) > 100


_TRACEBACK_TOKENS = [
    "Traceback (most recent call last):",
    '  File "x.py", line 3, in f',
    "    ^^^^",
    "",
    " ",
    "ValueError: bad",
    "During handling of the above exception, another exception occurred:",
    "plain line",
    "\tindented",
    "[rank0]: ",
    "[rank1]: ",
    "[rank0]: Traceback (most recent call last):",
    "x Traceback (most recent call last):",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.lists(st.sampled_from(_TRACEBACK_TOKENS), min_size=1, max_size=2).map("".join), min_size=1, max_size=15
        ),
        min_size=1,
        max_size=5,
    )
)
def test_batch_traceback_groups_equal_per_line_grouper_on_generated_lines(batches: list[list[str]]) -> None:
    """Generated tracebacks (chained, interleaved across ranks, cut between batches) get the per-line
    grouper's groups from the batch path."""
    enricher = LogEnricher()
    records: list[dict[str, Any]] = []
    batch_of: list[int] = []
    for seq, lines in enumerate(batches):
        batch = [
            {"ts_ns": i, "line": line, "stream": "stdout", "level": "", "logger": "", "i": i}
            for i, line in enumerate(lines)
        ]
        enricher.enrich("p", seq, 0, batch)
        records += batch
        batch_of += [seq] * len(batch)
    assert [rec.get("group", "") for rec in records] == _groups_per_line(records, batch_of)


def test_grouper_knows_which_ranks_have_an_open_traceback() -> None:
    """is_open is true for the (producer, rank) whose traceback is open, false for its other ranks."""
    grouper = TracebackGrouper()
    grouper.group_of("a", 3, 0, 0, "Traceback (most recent call last):")
    assert grouper.is_open("a", 3) and not grouper.is_open("a", -1) and not grouper.is_open("b", 3)
    grouper.group_of("a", 3, 0, 1, "ValueError: no")
    grouper.group_of("a", 3, 0, 2, "next line")
    assert not grouper.is_open("a", 3)
