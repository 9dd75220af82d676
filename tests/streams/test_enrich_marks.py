"""The line-shape memo of streams.enrich, keyed on raw lines, still answers as the per-line functions on stripped
lines: rank prefixes, ANSI codes, ``exitcode`` hidden by an escape, tracebacks that start on a known shape."""

from __future__ import annotations

from typing import Any

from streams import levels, signatures
from streams.enrich import LogEnricher
from streams.extract import extract
from streams.tracebacks import TracebackGrouper


def _records(lines: list[str]) -> list[dict[str, Any]]:
    return [
        {"ts_ns": 1_000 + i, "line": line, "stream": "stdout", "level": "", "logger": "", "i": i}
        for i, line in enumerate(lines)
    ]


def _expected(lines: list[str]) -> list[tuple[str, list[str], int | None, Any]]:
    """Level, tags, rank and extracted metrics of each line by the per-line functions."""
    out = []
    for line in lines:
        text, rank = levels.strip_decorations(line)
        out.append((levels.detect(text), signatures.tags_of(text), rank, extract(text)))
    return out


def _got(records: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> list[tuple[str, list[str], int | None, Any]]:
    by_i = {m["i"]: (m["step"], m["values"]) for m in metrics}
    return [(rec["level"], rec.get("tags", []), rec.get("rank"), by_i.get(rec["i"])) for rec in records]


def test_rank_prefixed_lines_of_one_shape_keep_their_own_rank() -> None:
    """Lines of one raw shape that differ in their rank get each its rank, in a new batch and from the memo."""
    lines = [f"[rank{r}]: step 1{r} | train_loss=0.{r}5 | WARNING slow" for r in range(1, 8)]
    enricher = LogEnricher()
    for seq in range(2):  # the second batch is answered from the memo
        records = _records(lines)
        metrics = enricher.enrich("p", seq, 0, records)
        assert _got(records, metrics) == _expected(lines)
        assert [rec["rank"] for rec in records] == list(range(1, 8))


def test_ansi_coloured_lines_get_the_facts_of_their_stripped_text() -> None:
    """A coloured level word and metric line are found once the codes are removed, first seen and from the memo."""
    lines = ["\x1b[32mINFO\x1b[0m epoch 3 train_loss=1.25", "\x1b[31mERROR\x1b[0m CUDA out of memory", "plain 7"]
    enricher = LogEnricher()
    for seq in range(2):
        records = _records(lines)
        metrics = enricher.enrich("p", seq, 0, records)
        assert _got(records, metrics) == _expected(lines)
    assert records[0]["level"] == "INFO" and records[1]["tags"] == ["oom"] and len(metrics) == 1


def test_exitcode_split_by_an_escape_is_looked_at_line_by_line() -> None:
    """``exit<ESC>code: -9`` (exitcode only once stripped) is tagged killed, and ``-1`` of the same shape is not."""
    lines = ["exit\x1b[0mcode: -9 (pid: 12)", "exit\x1b[0mcode: -1 (pid: 13)", "exit\x1b[0mcode: -9 (pid: 14)"]
    enricher = LogEnricher()
    for seq, batch in enumerate([lines, lines[::-1], lines[1:2]]):
        records = _records(batch)
        metrics = enricher.enrich("p", seq, 0, records)
        assert _got(records, metrics) == _expected(batch)
    assert "killed" in _expected(lines[:1])[0][1] and "killed" not in _expected(lines[1:2])[0][1]


def test_traceback_starting_on_a_known_shape_is_grouped() -> None:
    """A traceback whose lines' shapes the memo knows from another producer still gets its group, line by line as
    the per-line grouper gives it (rank prefixes kept apart)."""
    lines = [
        "[rank0]: Traceback (most recent call last):",
        '[rank0]:   File "train.py", line 12, in <module>',
        "[rank1]: step 4 loss=0.5",
        "[rank0]: RuntimeError: boom",
        "[rank0]: after",
    ]
    enricher = LogEnricher()
    enricher.enrich("first", 0, 0, _records(lines))
    records = _records(lines)
    enricher.enrich("second", 7, 0, records)
    grouper = TracebackGrouper()
    expected = []
    for rec in records:
        text, rank = levels.strip_decorations(rec["line"])
        expected.append(grouper.group_of("second", -1 if rank is None else rank, 7, rec["i"], text))
    assert [rec.get("group", "") for rec in records] == expected
    assert expected[:2] == ["second/7/0", "second/7/0"] and expected[3] == "second/7/0"
