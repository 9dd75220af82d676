"""Column pieces and the column-wise log path give exactly the rows of the per-record path."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from runstream import tables
from sinks.columns import Column, Run, log_columns
from sinks.rows import ColumnBuffer
from tests.sinks.conftest import BASE_NS, envelope, log_records, plain

_BAD = {"ts_ns": "yesterday", "line": "refused"}


def _both_paths(records: list[dict[str, Any]], **env: Any) -> tuple[pa.Table, pa.Table]:
    """The logs table from the column-wise path, and from the per-record path (one bad record added)."""
    fast, slow = ColumnBuffer(), ColumnBuffer()
    good = envelope("logs", records, seq=1, **env)
    assert log_columns(good.records, good.rank, good.node) is not None, "the column-wise path refused good records"
    fast.add_envelope(good)
    slow.add_envelope(envelope("logs", [*records, dict(_BAD, i=len(records))], seq=1, **env))
    assert fast.rows_in(tables.DEAD_LETTERS) == 0 and slow.rows_in(tables.DEAD_LETTERS) == 1
    return fast.to_arrow(tables.LOGS), slow.to_arrow(tables.LOGS)


@pytest.mark.parametrize(
    "records",
    [
        log_records(["a", "b", "c"]),
        [dict(r, level=lvl) for r, lvl in zip(log_records(["x", "y"]), ["INFO", "ERROR"], strict=True)],
        [dict(r, tags=["oom"], group="g") for r in log_records(["x", "y"])],
        [
            {"ts_ns": BASE_NS, "line": "Traceback", "tags": ["traceback"], "group": "g1", "rank": 3, "node": "n9"},
            {"ts_ns": BASE_NS + 1, "line": "plain", "tags": None, "stream": None, "orig_bytes": 7},
            {"ts_ns": BASE_NS + 2, "line": "x", "tags": [], "group": None, "level": "WARNING", "logger": "l"},
        ],
        [{"ts_ns": -1_999, "line": "before 1970"}, {"ts_ns": -1_000_000_000_001, "line": "floor division"}],
        [{"ts_ns": BASE_NS, "line": "same"}, {"ts_ns": BASE_NS, "line": "same"}],
    ],
    ids=["constant", "levels", "tags", "overrides", "pre-1970", "repeated"],
)
def test_column_wise_logs_equal_the_per_record_rows(records: list[dict[str, Any]]) -> None:
    """Every log column (runs, inferred arrays, defaults, overrides) is stored as the per-record path stores it."""
    fast, slow = _both_paths(records, rank=2, node="node-1")
    assert plain(fast).equals(plain(slow))


@pytest.mark.parametrize(
    "bad",
    [
        {"ts_ns": float(BASE_NS), "line": "float time"},
        {"ts_ns": BASE_NS, "line": "bool index", "i": True},
        {"ts_ns": BASE_NS, "line": b"bytes"},
        {"ts_ns": BASE_NS, "line": None},
        {"ts_ns": BASE_NS, "line": "tags as text", "tags": "oom"},
        {"ts_ns": BASE_NS, "line": "tags with a number", "tags": ["a", 1]},
        {"ts_ns": BASE_NS, "line": "rank beyond Int32", "rank": 2**31},
        {"ts_ns": BASE_NS, "line": "negative size", "orig_bytes": -1},
        {"ts_ns": BASE_NS, "line": "level as number", "level": 3},
        {"ts_ns": 2**64, "line": "time beyond Int64"},
    ],
)
def test_a_value_the_columns_cannot_take_refuses_only_its_record(bad: dict[str, Any]) -> None:
    """The column-wise path never stores a coerced value: the record becomes a dead letter, the rest is kept."""
    buf = ColumnBuffer()
    good = log_records(["kept", "kept too"])
    env = envelope("logs", [good[0], dict(bad), good[1]])
    assert log_columns(env.records, env.rank, env.node) is None
    buf.add_envelope(env)
    assert buf.rows_in(tables.LOGS) == 2 and buf.rows_in(tables.DEAD_LETTERS) == 1
    assert buf.to_arrow(tables.LOGS).column("line").to_pylist() == ["kept", "kept too"]


@pytest.mark.parametrize(
    ("kind", "pieces"),
    [
        (pa.string(), [Run("a", 3), Run("b", 2), Run("a", 1)]),
        (pa.int32(), [Run(1, 2), [5, 6], Run(1, 1), pa.array([7], pa.int32())]),
        (pa.timestamp("us", tz="UTC"), [Run(1_700_000_000_000_000, 2), Run(0, 1)]),
        (pa.list_(pa.string()), [Run([], 4)]),
        (pa.list_(pa.string()), [Run(["x"], 2), Run([], 1), [["y", "z"]]]),
        (pa.uint64(), [Run(2**64 - 1, 2), Run(0, 1)]),
    ],
    ids=["strings", "mixed", "timestamps", "empty-lists", "lists", "uint64"],
)
def test_column_pieces_convert_like_the_expanded_values(kind: pa.DataType, pieces: list[Any]) -> None:
    """Runs, lists and arrays in any order give pa.array of the values they stand for."""
    column = Column(kind)
    expanded: list[Any] = []
    for piece in pieces:
        column.add(piece)
        if isinstance(piece, Run):
            expanded += [piece.value] * piece.n
        else:
            expanded += piece.to_pylist() if isinstance(piece, pa.Array) else piece
    assert column.to_arrow().equals(pa.array(expanded, type=kind))


def test_a_run_continues_only_with_a_value_of_the_same_type() -> None:
    """1 and True are equal in Python; a run of 1 is not extended by True (it would be stored as 1)."""
    column = Column(pa.int64())
    column.add(Run(1, 2))
    column.add(Run(True, 1))
    assert column.pieces == [Run(1, 2), Run(True, 1)]


def test_a_low_cardinality_column_of_runs_comes_dictionary_encoded_with_the_same_values() -> None:
    """A dictionary column made only of runs gives a dictionary array whose values are the runs expanded."""
    column = Column(pa.string(), dictionary=True)
    for run in (Run("node-a", 3), Run("node-b", 2), Run("node-a", 1)):
        column.add(run)
    array = column.to_arrow()
    assert isinstance(array, pa.DictionaryArray) and array.dictionary.to_pylist() == ["node-a", "node-b"]
    assert array.to_pylist() == ["node-a"] * 3 + ["node-b"] * 2 + ["node-a"]


def test_a_low_cardinality_column_with_a_list_piece_stays_plain_text() -> None:
    """A dictionary column with values added one by one comes as a plain string array of the same values."""
    column = Column(pa.string(), dictionary=True)
    column.add(Run("INFO", 2))
    column.add(["", "ERROR"])
    assert column.to_arrow().equals(pa.array(["INFO", "INFO", "", "ERROR"], type=pa.string()))
