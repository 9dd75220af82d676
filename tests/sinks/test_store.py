"""The store on real chDB: migrations, inserts, deduplication, error mapping, ANSI stripping."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from runstream import tables
from runstream.errors import QueryLimitExceeded, StorageUnavailable
from sinks.migrate import applied_versions, discover, migrate, split_statements
from sinks.rows import ColumnBuffer
from sinks.schemas import LOW_CARDINALITY
from sinks.store import StorageError, Store, classify, split_dsn
from tests.sinks.conftest import BASE_NS, envelope, log_records

#: The same escape sequences the `text` column strips (CSI, OSC, charset, keypad/cursor save).
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()*+][0-9A-Za-z]|[=>78])")


def test_migrations_are_applied_once(store: Store) -> None:
    """A second migrate() applies nothing and records each version once."""
    assert migrate(store) == []
    versions = store.query_rows(
        f"SELECT version, count() FROM {store.database}.{tables.MIGRATIONS} GROUP BY version ORDER BY version"
    )
    assert versions == [(m.version, 1) for m in discover()]
    assert applied_versions(store) == {m.version for m in discover()}


def test_migrations_create_every_contract_table(store: Store) -> None:
    """Every table named in runstream.tables exists after migrating."""
    names = {r[0] for r in store.query_rows(f"SHOW TABLES FROM {store.database}")}
    assert {
        tables.RUN_EVENTS,
        tables.METRICS,
        tables.LOGS,
        tables.RESOURCES,
        tables.EVALS,
        tables.ALERTS,
        tables.DEAD_LETTERS,
        tables.MIGRATIONS,
    } <= names


def test_reopening_a_store_keeps_data_and_migrates_nothing(tmp_path: Path) -> None:
    """Restarting on the same data directory finds the schema and the rows already there."""
    from sinks.store import open_store

    dsn = f"chdb://{tmp_path / 'ch'}"
    first = open_store(dsn, "keep")
    first.command("INSERT INTO keep.alerts (run_id, ts, kind) VALUES ('r', now64(6), 'oom')")
    first.close()
    second = open_store(dsn, "keep")
    try:
        assert migrate(second) == []
        assert second.query_rows("SELECT count() FROM keep.alerts") == [(1,)]
    finally:
        second.close()


def test_statements_split_at_semicolons_ending_a_line() -> None:
    """A ';' inside a line (a string literal) does not split; comment lines are dropped."""
    sql = "-- note; not a split\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Log;\n\nSELECT 1 ;\n"
    assert split_statements(sql) == [
        "CREATE TABLE a (x String DEFAULT ';')\nENGINE = Log",
        "SELECT 1",
    ]


def test_database_name_must_be_an_identifier(tmp_path: Path) -> None:
    """A database name that is not an identifier is refused before any SQL runs."""
    with pytest.raises(ValueError, match="identifier"):
        Store(f"chdb://{tmp_path}", "x; DROP DATABASE y")


def test_server_dsn_database_is_split_off() -> None:
    """An http DSN's path names the database; the store connects without it."""
    assert split_dsn("http://u:p@host:8123/mydb") == ("http://u:p@host:8123", "mydb")
    assert split_dsn("chdb:///data/ch") == ("chdb:///data/ch", None)


def test_repeated_dedup_token_inserts_once(store: Store) -> None:
    """Inserting the same batch twice with one token stores it once."""
    buf = ColumnBuffer()
    buf.add_envelope(envelope("logs", log_records(["a", "b", "c"])))
    batch = buf.to_arrow(tables.LOGS)
    store.insert_arrow(tables.LOGS, batch, dedup_token="logs:t:0:0-0:x")
    store.insert_arrow(tables.LOGS, batch, dedup_token="logs:t:0:0-0:x")
    assert store.query_rows(f"SELECT count() FROM {store.database}.logs") == [(3,)]
    store.insert_arrow(tables.LOGS, batch, dedup_token="logs:t:0:1-1:y")
    assert store.query_rows(f"SELECT count() FROM {store.database}.logs") == [(6,)]


async def test_call_runs_on_the_one_store_thread(store: Store) -> None:
    """store.call runs the function on the store's thread, not the event loop's."""
    names = {await store.call(lambda: threading.current_thread().name) for _ in range(3)}
    assert len(names) == 1 and names != {threading.current_thread().name}


def test_query_over_its_limit_raises_query_limit_exceeded(store: Store) -> None:
    """A read over max_rows_to_read is QueryLimitExceeded, and the store keeps working."""
    with pytest.raises(QueryLimitExceeded):
        store.query_rows("SELECT count() FROM numbers(1000000)", settings={"max_rows_to_read": 10})
    assert store.query_rows("SELECT count() FROM numbers(1000)") == [(1000,)]


def test_bad_sql_is_a_permanent_storage_error(store: Store) -> None:
    """An unknown table is a permanent StorageError carrying the ClickHouse code."""
    with pytest.raises(StorageError) as info:
        store.query_rows("SELECT * FROM no_such_db.no_such_table")
    assert info.value.code in (60, 81) and not info.value.retriable


def test_transport_errors_are_retriable() -> None:
    """Connection failures and server timeouts map to the retriable StorageUnavailable."""
    assert isinstance(classify(ConnectionRefusedError("refused"), reading=False), StorageUnavailable)
    assert isinstance(classify(RuntimeError("Code: 210. DB::Exception: net"), reading=False), StorageUnavailable)
    assert isinstance(classify(RuntimeError("Code: 159. DB::Exception: t"), reading=True), QueryLimitExceeded)


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    """After close(), a call raises StorageError instead of hanging."""
    from tests.sinks.conftest import open_temp_store

    s = open_temp_store(tmp_path / "ch")
    s.close()
    s.close()
    with pytest.raises(StorageError):
        s.query_rows("SELECT 1")


def test_text_column_strips_ansi_from_real_logs(store: Store, real_logs_dir: Path) -> None:
    """`text` equals the line with its ANSI escape sequences removed, on real coloured logs."""
    lines: list[str] = []
    for name in (
        "lightning_tmr_rich_ansi_train.out",
        "verl_grpo_qwen2.5_1.5b_ray_ansi.out",
        "verl_logic_rl_grpo_ray_worker_import_errors.log",
    ):
        text = (real_logs_dir / name).read_text(encoding="utf-8", errors="replace")
        lines += [line for line in text.split("\n") if "\x1b" in line]
    lines += [
        "\x1b]8;;https://example.com\x07link\x1b]8;;\x1b\\ done",
        "\x1b(Bplain\x1b[?25l\x1b[2K",
    ]
    buf = ColumnBuffer()
    buf.add_envelope(envelope("logs", log_records(lines)))
    store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))
    got = store.query_rows(f"SELECT line, text FROM {store.database}.logs")
    assert len(got) == len(lines) > 500
    for line, text in got:
        assert text == ANSI.sub("", line)
        assert "\x1b" not in text, line


def test_unreachable_server_is_retriable_and_hides_the_password() -> None:
    """A server DSN nobody answers on raises StorageUnavailable without the DSN's password."""
    from runstream.embedded import free_port

    with pytest.raises(StorageUnavailable) as info:
        Store(f"http://user:s3cret@127.0.0.1:{free_port()}/db")
    assert info.value.retriable and "s3cret" not in str(info.value)


def test_insert_values_stores_text_as_given(store: Store) -> None:
    """insert_values stores quotes, backslashes, newlines and braces in text exactly, and the numbers."""
    topic = "a'b\\c\n\t{x:String} ; DROP TABLE t"
    store.insert_values(
        tables.SINK_SPANS,
        [(topic, 3, 10, 2**62, "d1"), ("plain", -1, 0, 0, "")],
        ["topic", "partition", "first_offset", "last_offset", "first_digest"],
    )
    rows = store.query_rows(
        f"SELECT topic, partition, first_offset, last_offset, first_digest FROM {store.database}.sink_spans "
        "ORDER BY partition DESC"
    )
    assert rows == [(topic, 3, 10, 2**62, "d1"), ("plain", -1, 0, 0, "")]


def test_insert_values_refuses_values_it_cannot_bind(store: Store) -> None:
    """insert_values takes ints and strings only (a float or a bool is a TypeError, nothing stored)."""
    columns = ["topic", "partition", "first_offset", "last_offset", "first_digest"]
    with pytest.raises(TypeError):
        store.insert_values(tables.SINK_SPANS, [("t", True, 0, 0, "")], columns)
    with pytest.raises(TypeError):
        store.insert_values(tables.SINK_SPANS, [("t", 1, 0.5, 0, "")], columns)
    assert store.query_rows(f"SELECT count() FROM {store.database}.sink_spans") == [(0,)]


def test_insert_values_refuses_numbers_outside_int64(store: Store) -> None:
    """insert_values raises ValueError for an int outside Int64 (never stored wrapped), and stores nothing."""
    columns = ["topic", "partition", "first_offset", "last_offset", "first_digest"]
    with pytest.raises(ValueError):
        store.insert_values(tables.SINK_SPANS, [("t", 1, 0, 2**63, "")], columns)
    assert store.query_rows(f"SELECT count() FROM {store.database}.sink_spans") == [(0,)]


def test_small_metric_parts_are_written_packed(store: Store) -> None:
    """A small insert into metrics writes packed parts there and in both views' tables (migration 007)."""
    buf = ColumnBuffer()
    records = [
        {"ts_ns": BASE_NS + step, "step": step, "values": {"loss": 1.0 / (step + 1)}, "i": step} for step in range(50)
    ]
    buf.add_envelope(envelope("metrics", records))
    store.insert_arrow(tables.METRICS, buf.to_arrow(tables.METRICS))
    rows = store.query_rows(
        "SELECT table, groupUniqArray(part_storage_type) FROM system.parts "
        "WHERE database = {db:String} AND active AND table IN ('metrics', 'metric_summary', 'metric_rollup') "
        "GROUP BY table ORDER BY table",
        {"db": store.database},
    )
    assert rows == [("metric_rollup", ["Packed"]), ("metric_summary", ["Packed"]), ("metrics", ["Packed"])]


def test_low_cardinality_columns_of_the_schemas_are_low_cardinality_in_clickhouse(store: Store) -> None:
    """Every column the sink may send dictionary-encoded is a LowCardinality(String) column of its table."""
    for table, names in LOW_CARDINALITY.items():
        types = dict(
            store.query_rows(
                "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
                {"db": store.database, "t": table},
            )
        )
        assert {name: types[name] for name in names} == dict.fromkeys(names, "LowCardinality(String)"), table


def test_dictionary_encoded_columns_are_stored_as_their_values(store: Store) -> None:
    """Log and metric rows whose node, stream and logger came dictionary-encoded read back as sent."""
    buf = ColumnBuffer()
    buf.add_envelope(envelope("logs", log_records(["a", "b"]), node="node-7"))
    buf.add_envelope(envelope("logs", log_records(["c"], stream="stderr"), node="node-8"))
    buf.add_envelope(envelope("metrics", [{"ts_ns": BASE_NS, "values": {"loss": 1.5}, "source": "log"}], node="n9"))
    logs, metrics = buf.to_arrow(tables.LOGS), buf.to_arrow(tables.METRICS)
    assert pa.types.is_dictionary(logs.schema.field("node").type)
    assert pa.types.is_dictionary(metrics.schema.field("node").type)
    store.insert_arrow(tables.LOGS, logs)
    store.insert_arrow(tables.METRICS, metrics)
    db = store.database
    assert store.query_rows(f"SELECT line, node, stream, logger FROM {db}.{tables.LOGS} ORDER BY line") == [
        ("a", "node-7", "stdout", ""),
        ("b", "node-7", "stdout", ""),
        ("c", "node-8", "stderr", ""),
    ]
    assert store.query_rows(f"SELECT name, node, source, value FROM {db}.{tables.METRICS}") == [
        ("loss", "n9", "log", 1.5)
    ]
