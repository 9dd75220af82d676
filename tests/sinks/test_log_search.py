"""Log search on real chDB and real training logs: answers equal a grep -i -F oracle."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runstream import tables
from runstream.errors import QueryError
from runstream.timeparse import format_ns
from sinks.cursor import encode_cursor
from sinks.queries import Queries
from sinks.rows import ColumnBuffer
from tests.sinks.conftest import BASE_NS, envelope, open_temp_store
from tests.sinks.test_store import ANSI

LOGS = (
    "deepspeed_chat_llama7b_lora_zero3_16rank_crash.log",
    "hf_trainer_deepspeed_mobilevlm_pretrain_tqdm_cr.out",
    "lightning_tmr_rich_ansi_train.out",
    "nanogpt_torch_compile_cuda_oom_wandb_output.log",
)
RUN = "crash-run"
RANKS = 16
PER_ENVELOPE = 50


@dataclass(frozen=True)
class Line:
    ts_ns: int
    node: str
    rank: int
    stream: str
    level: str
    line: str
    producer: str
    seq: int
    idx: int

    @property
    def text(self) -> str:
        return ANSI.sub("", self.line)

    @property
    def key(self) -> tuple[int, str, int, int]:
        return (self.ts_ns // 1000, self.producer, self.seq, self.idx)

    def answer(self) -> dict[str, Any]:
        return {
            "ts": format_ns(self.ts_ns),
            "node": self.node,
            "rank": self.rank,
            "stream": self.stream,
            "level": self.level,
            "logger": "",
            "line": self.line,
            "tags": [],
            "group": "",
            "id": encode_cursor(self.ts_ns // 1000, self.producer, self.seq, self.idx),
        }


def _level(line: str) -> str:
    for name in ("ERROR", "WARNING", "INFO", "DEBUG"):
        if f"[{name}]" in line or f" {name} " in line:
            return name
    return ""


def _corpus(real_logs_dir: Path) -> list[Line]:
    raw: list[str] = []
    for name in LOGS:
        raw += (real_logs_dir / name).read_text(encoding="utf-8", errors="replace").split("\n")
    out: list[Line] = []
    for i, text in enumerate(raw):
        rank = i % RANKS
        # Three lines share each microsecond, so ties are broken by producer, seq, index.
        out.append(
            Line(
                BASE_NS + (i // 3) * 1_000,
                f"node-{rank // 8}",
                rank,
                "stderr" if i % 5 == 0 else "stdout",
                _level(text),
                text,
                f"prod-{rank:02d}",
                i // (RANKS * PER_ENVELOPE),
                0,
            )
        )
    return out


@pytest.fixture(scope="module")
def corpus(real_logs_dir: Path) -> list[Line]:
    lines = _corpus(real_logs_dir)
    # Record index within its envelope: the position among lines of the same producer and seq.
    counters: dict[tuple[str, int], int] = {}
    fixed = []
    for ln in lines:
        idx = counters.get((ln.producer, ln.seq), 0)
        counters[(ln.producer, ln.seq)] = idx + 1
        fixed.append(Line(**{**ln.__dict__, "idx": idx}))
    return fixed


@pytest.fixture(scope="module")
def queries(corpus: list[Line], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Queries]:
    store = open_temp_store(tmp_path_factory.mktemp("logs"))
    groups: dict[tuple[str, int], list[Line]] = {}
    for ln in corpus:
        groups.setdefault((ln.producer, ln.seq), []).append(ln)
    buf = ColumnBuffer()
    for (producer, seq), lines in groups.items():
        first = lines[0]
        recs = [
            {
                "ts_ns": ln.ts_ns,
                "line": ln.line,
                "stream": ln.stream,
                "level": ln.level,
                "logger": "",
                "i": ln.idx,
            }
            for ln in lines
        ]
        buf.add_envelope(envelope("logs", recs, run=RUN, node=first.node, rank=first.rank, producer=producer, seq=seq))
    store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))
    try:
        yield Queries(store)
    finally:
        store.close()


def _oracle(
    corpus: list[Line],
    q: str | None = None,
    regex: str | None = None,
    levels: set[str] | None = None,
    node: str | None = None,
    rank: int | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
) -> list[Line]:
    pattern = re.compile(regex) if regex else None
    hits = [
        ln
        for ln in corpus
        if (q is None or q.lower() in ln.text.lower())
        and (pattern is None or pattern.search(ln.text))
        and (levels is None or ln.level in levels)
        and (node is None or ln.node == node)
        and (rank is None or ln.rank == rank)
        and (since_ns is None or ln.ts_ns >= since_ns)
        and (until_ns is None or ln.ts_ns <= until_ns)
    ]
    return sorted(hits, key=lambda ln: ln.key)


def _all_pages(queries: Queries, limit: int = 10_000, **filters: Any) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        page = queries.search_logs(RUN, limit=limit, cursor=cursor, **filters)
        lines += page["lines"]
        cursor = page["next_cursor"]
        if cursor is None:
            return lines
    raise AssertionError("paging did not end")


@pytest.mark.parametrize(
    "q",
    [
        "error",
        "ERROR",
        "CUDA out of memory",
        "Traceback",
        "out of mem",
        "RuntimeError: CUDA",
        "[INFO] [launch.py",
        "100%|",
        "_",
        "%",
        "loss",
        "torch.cuda.OutOfMemoryError",
        "no such text anywhere",
    ],
)
def test_keyword_search_equals_grep(queries: Queries, corpus: list[Line], q: str) -> None:
    """q matches exactly the lines that contain it, case-insensitively, ANSI codes ignored."""
    expected = [ln.answer() for ln in _oracle(corpus, q=q)]
    assert _all_pages(queries, q=q) == expected


def test_keyword_search_finds_the_oom(queries: Queries, corpus: list[Line]) -> None:
    """The CUDA OOM of the crash logs is found."""
    assert queries.search_logs(RUN, q="CUDA out of memory")["lines"]


def test_search_sees_through_ansi_codes(queries: Queries, corpus: list[Line]) -> None:
    """A word split by colour codes in the raw line is found in the stripped text."""
    coloured = [ln for ln in corpus if "\x1b[" in ln.line and "INFO" in ln.text]
    assert coloured
    assert len(_all_pages(queries, q="INFO   Training")) == len(_oracle(corpus, q="INFO   Training")) > 0


@pytest.mark.parametrize(
    "regex",
    [r"(?i)out of memory", r"rank\s*[0-9]+", r"^\s*File \".*\", line \d+", r"loss[=:]\s*[0-9.]+"],
)
def test_regex_search_equals_python_re(queries: Queries, corpus: list[Line], regex: str) -> None:
    """regex is RE2 over the stripped text; on these patterns it agrees with Python's re."""
    expected = [ln.answer() for ln in _oracle(corpus, regex=regex)]
    assert _all_pages(queries, regex=regex) == expected


def test_time_range_level_and_node_filters(queries: Queries, corpus: list[Line]) -> None:
    """since/until (inclusive), a level list and a node combine with the keyword."""
    since, until = corpus[2000].ts_ns, corpus[9000].ts_ns
    got = _all_pages(queries, q="info", level="INFO,WARNING", node="node-1", since_ns=since, until_ns=until)
    expected = _oracle(corpus, q="info", levels={"INFO", "WARNING"}, node="node-1", since_ns=since, until_ns=until)
    assert got == [ln.answer() for ln in expected] and expected


def test_rank_filter(queries: Queries, corpus: list[Line]) -> None:
    """rank keeps one rank's lines."""
    assert _all_pages(queries, rank=7) == [ln.answer() for ln in _oracle(corpus, rank=7)]


def test_cursor_pages_cover_every_row_exactly_once(queries: Queries, corpus: list[Line]) -> None:
    """Paging with a small limit returns every line once, in order, ties included."""
    got = _all_pages(queries, limit=997)
    assert got == [ln.answer() for ln in sorted(corpus, key=lambda ln: ln.key)]


def test_descending_pages_are_newest_first(queries: Queries, corpus: list[Line]) -> None:
    """order=desc pages newest first and covers the same rows."""
    got = _all_pages(queries, limit=333, q="info", order="desc")
    assert got == [ln.answer() for ln in reversed(_oracle(corpus, q="info"))]


def test_limit_is_capped(queries: Queries) -> None:
    """A limit over 10000 returns at most 10000 lines."""
    assert len(queries.search_logs(RUN, limit=50_000)["lines"]) == 10_000


def test_bad_regex_is_a_query_error(queries: Queries) -> None:
    """A regex that does not compile is a QueryError that says so."""
    with pytest.raises(QueryError, match="regex is not valid RE2"):
        queries.search_logs(RUN, regex="(unclosed")


@pytest.mark.parametrize("cursor", ["not-base64!!", "AAAA", "WzEsMiwzXQ", "W10"])
def test_bad_cursor_is_a_query_error(queries: Queries, cursor: str) -> None:
    """A cursor this server did not make is a QueryError."""
    with pytest.raises(QueryError, match="cursor"):
        queries.search_logs(RUN, cursor=cursor)


def test_bad_level_and_stream_are_query_errors(queries: Queries) -> None:
    """An unknown level or stream is a QueryError naming the accepted values."""
    with pytest.raises(QueryError, match="level"):
        queries.search_logs(RUN, level="INFO,LOUD")
    with pytest.raises(QueryError, match="stream"):
        queries.search_logs(RUN, stream="stdin")


@pytest.mark.parametrize("q", ["error", "CUDA out of memory", "loss", None])
def test_histogram_counts_equal_the_oracle(queries: Queries, corpus: list[Line], q: str | None) -> None:
    """Every histogram bucket counts exactly the matching lines of its time slice, and none is missing."""
    since, until = corpus[100].ts_ns, corpus[-100].ts_ns
    got = queries.log_histogram(RUN, buckets=37, q=q, since_ns=since, until_ns=until)
    hits = _oracle(corpus, q=q, since_ns=since, until_ns=until)
    width_us = round(got["width_s"] * 1e6)
    expected = [0] * len(got["buckets"])
    for ln in hits:
        expected[(ln.ts_ns // 1000 - since // 1000) // width_us] += 1
    assert [b["count"] for b in got["buckets"]] == expected and got["total"] == len(hits)


def test_histogram_without_range_spans_the_run(queries: Queries, corpus: list[Line]) -> None:
    """Without since/until the buckets cover the run's first to last line."""
    got = queries.log_histogram(RUN, buckets=10, regex=r"rank\s*[0-9]+")
    assert got["buckets"][0]["ts"] == format_ns(corpus[0].ts_ns)
    assert got["total"] == len(_oracle(corpus, regex=r"rank\s*[0-9]+"))


def test_context_is_the_neighbouring_lines(queries: Queries, corpus: list[Line]) -> None:
    """A hit's context is the lines just before and after it in the run's order."""
    ordered = sorted(corpus, key=lambda ln: ln.key)
    hit = queries.search_logs(RUN, q="CUDA out of memory", limit=1)["lines"][0]
    pos = next(i for i, ln in enumerate(ordered) if ln.answer()["id"] == hit["id"])
    got = queries.log_context(RUN, hit["id"], before=5, after=7)
    assert got["line"] == hit
    assert got["before"] == [ln.answer() for ln in ordered[pos - 5 : pos]]
    assert got["after"] == [ln.answer() for ln in ordered[pos + 1 : pos + 8]]


def test_context_of_one_rank(queries: Queries, corpus: list[Line]) -> None:
    """rank= keeps the context to the hit's own rank."""
    ordered = [ln for ln in sorted(corpus, key=lambda ln: ln.key) if ln.rank == 3]
    got = queries.log_context(RUN, ordered[500].answer()["id"], before=3, after=3, rank=3)
    assert got["before"] + [got["line"]] + got["after"] == [ln.answer() for ln in ordered[497:504]]


def test_project_search_equals_the_run_search(queries: Queries, corpus: list[Line]) -> None:
    """Searching every run finds this run's lines, newest first, each naming its run."""
    got = queries.search_project_logs(q="traceback", limit=10_000, run_ids=[RUN])
    assert got["lines"] == [dict(ln.answer(), run=RUN) for ln in reversed(_oracle(corpus, q="traceback"))]


def _fold_run(queries: Queries, run: str, lines: list[str]) -> Queries:
    buf = ColumnBuffer()
    recs = [{"ts_ns": BASE_NS + i * 1000, "line": ln} for i, ln in enumerate(lines)]
    buf.add_envelope(envelope("logs", recs, run=run))
    queries.store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))
    return queries


@pytest.mark.parametrize(("q", "line"), [("ÄRGER", "kein ärger hier"), ("Ошибка", "произошла ОШИБКА")])
def test_non_ascii_keyword_folds_case(queries: Queries, q: str, line: str) -> None:
    """A non-ASCII keyword matches its other case, as Python's lower() of both sides does."""
    run = f"fold-{line[:4]}"
    _fold_run(queries, run, [line, "x"])
    got = [ln["line"] for ln in queries.search_logs(run, q=q)["lines"]]
    assert got == [line] and q.lower() in line.lower()


def test_ascii_keyword_folds_ascii_letters_only(queries: Queries) -> None:
    """An ASCII keyword folds ASCII letters only: the Kelvin sign is not a 'k' (documented, not Python's lower)."""
    lines = ["temperature 300 \u212a", "temperature 300 K", "TEMPERATURE 300 k"]
    _fold_run(queries, "fold-kelvin", lines)
    got = [ln["line"] for ln in queries.search_logs("fold-kelvin", q="300 k")["lines"]]
    assert got == lines[1:]


def test_tag_filter_keeps_tagged_lines(queries: Queries) -> None:
    """tag= keeps the lines the stream processor tagged with it, in search and histogram alike."""
    buf = ColumnBuffer()
    recs = [
        {"ts_ns": BASE_NS, "line": "CUDA out of memory", "tags": ["oom"], "group": "g"},
        {"ts_ns": BASE_NS + 1000, "line": "fine"},
        {"ts_ns": BASE_NS + 2000, "line": "Traceback", "tags": ["traceback", "oom"], "group": "g"},
    ]
    buf.add_envelope(envelope("logs", recs, run="tagged"))
    queries.store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))
    got = queries.search_logs("tagged", tag="oom")["lines"]
    assert [ln["line"] for ln in got] == ["CUDA out of memory", "Traceback"] and got[1]["tags"] == ["traceback", "oom"]
    assert queries.log_histogram("tagged", buckets=3, tag="oom")["total"] == 2
