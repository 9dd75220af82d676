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
