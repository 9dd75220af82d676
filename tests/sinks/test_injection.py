"""Hostile strings in every query parameter are values: they match literally and run no SQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runstream import tables
from runstream.errors import QueryError
from sinks.queries import Queries
from sinks.rows import ColumnBuffer
from sinks.store import Store
from tests.sinks.conftest import BASE_NS, envelope, log_records, open_temp_store

HOSTILE = [
    "'",
    "''",
    '"',
    "\\",
    "\\'",
    "' OR 1=1 --",
    "x' UNION SELECT name FROM system.tables --",
    "'; DROP TABLE logs; --",
    "{x:String}",
    "{run:String}",
    "--",
    "/*",
    "*/",
    "%",
    "_",
    "\\%",
    "\u2019 OR \u2018a\u2018=\u2018a",
    "\uff07",
    "\x00",
    "$$",
    "`logs`",
    "a\nb",
    "(?i).*",
]
CANARY = "canary run"


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Queries]:
    store = open_temp_store(tmp_path_factory.mktemp("inject"))
    buf = ColumnBuffer()
    buf.add_envelope(envelope("logs", log_records([f"value {h} here" for h in HOSTILE] + ["plain"]), run=CANARY))
    buf.add_envelope(envelope("metrics", [{"ts_ns": BASE_NS, "step": 1, "values": {"loss": 1.0}}], run=CANARY))
    buf.add_envelope(envelope("runs", [{"ts_ns": BASE_NS, "event": "start", "project": "proj"}], run=CANARY))
    for table in buf.tables():
        store.insert_arrow(table, buf.to_arrow(table))
    try:
        yield Queries(store)
    finally:
        store.close()


def _counts(store: Store) -> list[tuple[str, int]]:
    return [
        (t, store.query_rows(f"SELECT count() FROM {store.database}.{t}")[0][0])
        for t in (tables.LOGS, tables.METRICS, tables.RUN_EVENTS)
    ]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_change_nothing(queries: Queries, value: str) -> None:
    """Every string parameter takes the hostile value as data: no error, no rows, tables intact."""
    before = _counts(queries.store)
    assert queries.search_logs(value)["lines"] == []
    assert queries.search_logs(CANARY, node=value)["lines"] == []
    assert queries.metric_series(value, value)["points"] == []
    assert queries.metric_series(CANARY, value)["points"] == []
    assert queries.metric_names(value) == []
    assert queries.get_run(value) is None
    assert queries.list_runs(project=value) == []
    assert queries.alerts(value)["alerts"] == []
    assert _counts(queries.store) == before


@pytest.mark.parametrize("value", [h for h in HOSTILE if h != "\x00"])
def test_hostile_keyword_matches_itself_literally(queries: Queries, value: str) -> None:
    """q containing quotes, wildcards or placeholders finds exactly the lines containing it."""
    lines = [ln["line"] for ln in queries.search_logs(CANARY, q=value)["lines"]]
    expected = [f"value {h} here" for h in HOSTILE if value.lower() in f"value {h} here".lower()]
    assert lines == expected and lines


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_regex_is_data_or_a_query_error(queries: Queries, value: str) -> None:
    """A hostile regex either compiles (and matches as a regex) or is refused as a QueryError."""
    try:
        queries.search_logs(CANARY, regex=value)
    except QueryError as exc:
        assert "regex" in str(exc)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_validated_parameters_are_query_errors(queries: Queries, value: str) -> None:
    """level, stream, status, order and cursor refuse anything but their known values."""
    for call in (
        lambda: queries.search_logs(CANARY, level=value + "x"),
        lambda: queries.search_logs(CANARY, stream=value),
        lambda: queries.search_logs(CANARY, order=value),
        lambda: queries.search_logs(CANARY, cursor=value),
        lambda: queries.list_runs(status=value),
    ):
        with pytest.raises(QueryError):
            call()
