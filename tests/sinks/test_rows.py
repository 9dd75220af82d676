"""Clean envelopes to table columns (pure: no ClickHouse)."""

from __future__ import annotations

import json
import math

import pyarrow as pa

from runstream import deadletter, tables
from sinks.rows import SCHEMAS, ColumnBuffer, json_text
from sinks.schemas import LOW_CARDINALITY
from tests.sinks.conftest import BASE_NS, envelope, plain

US = BASE_NS // 1000


def test_logs_fan_out_one_row_per_record() -> None:
    """Each log record becomes one row carrying the envelope's identity and its own index."""
    buf = ColumnBuffer()
    env = envelope(
        "logs",
        [
            {"ts_ns": BASE_NS, "line": "hello", "stream": "stdout", "level": "INFO", "logger": "x"},
            {
                "ts_ns": BASE_NS + 5_000,
                "line": "\x1b[31mboom\x1b[0m",
                "stream": "stderr",
                "level": "",
                "logger": "",
                "orig_bytes": 99_000,
            },
        ],
        run="r1",
        node="n1",
        rank=3,
        producer="p1",
        seq=7,
    )
    assert buf.add_envelope(env) == 2
    rows = buf.to_arrow(tables.LOGS).to_pylist()
    assert [r["line"] for r in rows] == ["hello", "\x1b[31mboom\x1b[0m"]
    assert [r["idx"] for r in rows] == [0, 1]
    assert [r["orig_bytes"] for r in rows] == [0, 99_000]
    assert {(r["run_id"], r["node"], r["rank"], r["producer"], r["seq"]) for r in rows} == {("r1", "n1", 3, "p1", 7)}
    assert int(rows[1]["ts"].timestamp() * 1_000_000) == US + 5


def test_metrics_fan_out_one_row_per_value_with_its_position() -> None:
    """A metrics record with three values gives three rows, ``sub`` 0..2, NaN and Inf kept."""
    buf = ColumnBuffer()
    env = envelope(
        "metrics",
        [{"ts_ns": BASE_NS, "step": 12, "values": {"loss": 0.5, "acc": math.nan, "lr": math.inf}}],
    )
    assert buf.add_envelope(env) == 3
    rows = buf.to_arrow(tables.METRICS).to_pylist()
    assert [(r["name"], r["sub"], r["step"]) for r in rows] == [
        ("loss", 0, 12),
        ("acc", 1, 12),
        ("lr", 2, 12),
    ]
    assert math.isnan(rows[1]["value"]) and rows[2]["value"] == math.inf


def test_metrics_without_step_store_minus_one() -> None:
    """A metrics record without a step is stored at step -1."""
    buf = ColumnBuffer()
    buf.add_envelope(envelope("metrics", [{"ts_ns": BASE_NS, "values": {"loss": 1}}]))
    assert buf.to_arrow(tables.METRICS).column("step").to_pylist() == [-1]


def test_resources_fan_out_per_device_value() -> None:
    """A resources sample gives one row per measurement, with its device."""
    buf = ColumnBuffer()
    buf.add_envelope(
        envelope(
            "resources",
            [{"ts_ns": BASE_NS, "device": "gpu0", "values": {"util_pct": 97.0, "mem_bytes": 1e9}}],
        )
    )
    rows = buf.to_arrow(tables.RESOURCES).to_pylist()
    assert [(r["device"], r["name"], r["value"], r["sub"]) for r in rows] == [
        ("gpu0", "util_pct", 97.0, 0),
        ("gpu0", "mem_bytes", 1e9, 1),
    ]


def test_run_events_keep_each_event_kind() -> None:
    """start, heartbeat and finish become run_events rows with their own fields."""
    buf = ColumnBuffer()
    buf.add_envelope(
        envelope(
            "runs",
            [
                {
                    "ts_ns": BASE_NS,
                    "event": "start",
                    "project": "p",
                    "name": "n",
                    "config": {"lr": 0.1},
                    "tags": ["a"],
                    "host": "h",
                    "pid": 42,
                    "world_size": 2,
                    "argv": ["train.py"],
                },
                {"ts_ns": BASE_NS + 1, "event": "heartbeat"},
                {
                    "ts_ns": BASE_NS + 2,
                    "event": "finish",
                    "status": "failed",
                    "exit_code": 3,
                    "reason": "oom",
                },
            ],
        )
    )
    rows = buf.to_arrow(tables.RUN_EVENTS).to_pylist()
    assert [r["event"] for r in rows] == ["start", "heartbeat", "finish"]
    assert json.loads(rows[0]["config"]) == {"lr": 0.1} and rows[0]["tags"] == ["a"] and rows[0]["pid"] == 42
    assert rows[1]["config"] == "" and rows[1]["exit_code"] is None
    assert (rows[2]["status"], rows[2]["exit_code"], rows[2]["reason"]) == ("failed", 3, "oom")


def test_evals_store_data_as_valid_json_with_nan_as_strings() -> None:
    """Evaluation data with NaN/±Inf is stored as valid JSON with "NaN", "Infinity" strings."""
    buf = ColumnBuffer()
    buf.add_envelope(
        envelope(
            "evals",
            [
                {
                    "ts_ns": BASE_NS,
                    "name": "pr",
                    "type": "pr_curve",
                    "data": {"p": [1.0, math.nan], "t": [math.inf, -math.inf]},
                }
            ],
        )
    )
    data = buf.to_arrow(tables.EVALS).column("data").to_pylist()[0]
    assert json.loads(data) == {"p": [1.0, "NaN"], "t": ["Infinity", "-Infinity"]}


def test_json_text_never_emits_bare_nan() -> None:
    """Config JSON is strict JSON: bytes become text, NaN a string, keys strings."""
    text = json_text({"a": math.nan, b"k": b"v", "n": {"x": (1, -math.inf)}})
    assert json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == {
        "a": "NaN",
        "k": "v",
        "n": {"x": [1, "-Infinity"]},
    }


def test_bad_record_becomes_dead_letter_and_the_rest_is_kept() -> None:
    """A record that does not fit goes to dead_letters with a reason; its neighbours are stored."""
    buf = ColumnBuffer()
    env = envelope(
        "logs",
        [
            {"ts_ns": BASE_NS, "line": "ok", "stream": "stdout", "level": "", "logger": ""},
            {"ts_ns": "yesterday", "line": "bad", "stream": "stdout", "level": "", "logger": ""},
            {"ts_ns": BASE_NS, "line": "ok too", "stream": "stdout", "level": "", "logger": ""},
        ],
        producer="pp",
        seq=5,
    )
    assert buf.add_envelope(env, topic="t.clean.logs", partition=2, offset=40, ts_ns=BASE_NS) == 2
    assert buf.to_arrow(tables.LOGS).column("line").to_pylist() == ["ok", "ok too"]
    (letter,) = buf.to_arrow(tables.DEAD_LETTERS).to_pylist()
    assert (
        letter["topic"],
        letter["partition"],
        letter["offset"],
        letter["producer"],
        letter["seq"],
        letter["idx"],
    ) == ("t.clean.logs", 2, 40, "pp", 5, 1)
    assert "ts_ns" in letter["reason"]


def test_out_of_range_number_is_refused_not_crashing() -> None:
    """A pid beyond UInt32 is a dead letter, not an Arrow overflow at flush time."""
    buf = ColumnBuffer()
    buf.add_envelope(envelope("runs", [{"ts_ns": BASE_NS, "event": "start", "pid": -1}]))
    assert buf.rows_in(tables.RUN_EVENTS) == 0 and buf.rows_in(tables.DEAD_LETTERS) == 1
    buf.to_arrow(tables.DEAD_LETTERS)


def test_dead_letter_from_the_dlq_topic_maps_every_field() -> None:
    """A dead letter read from the dlq topic keeps topic, offsets, reason, sample and identity."""
    doc = deadletter.parse(
        deadletter.make(
            topic="x.logs",
            partition=1,
            offset=9,
            reason="bad line",
            sample={"line": 3},
            producer="p",
            seq=4,
            index=2,
            run="r",
            ts_ns=BASE_NS,
        )
    )
    buf = ColumnBuffer()
    buf.add_dead_letter(doc)
    (row,) = buf.to_arrow(tables.DEAD_LETTERS).to_pylist()
    assert (
        row["topic"],
        row["partition"],
        row["offset"],
        row["reason"],
        row["sample"],
        row["producer"],
        row["seq"],
        row["idx"],
        row["run_id"],
    ) == ("x.logs", 1, 9, "bad line", "{'line': 3}", "p", 4, 2, "r")


def test_arrow_types_match_the_table_schemas() -> None:
    """Every table's Arrow batch has the declared types (µs UTC timestamps, unsigned ids); a LowCardinality
    text column may come dictionary-encoded instead."""
    buf = ColumnBuffer()
    for kind in ("logs", "metrics"):
        rec = {
            "ts_ns": BASE_NS,
            "line": "x",
            "stream": "stdout",
            "level": "",
            "logger": "",
            "values": {"a": 1},
        }
        buf.add_envelope(envelope(kind, [rec]))
    for table in (tables.LOGS, tables.METRICS, tables.RUN_EVENTS):
        batch = buf.to_arrow(table)
        declared = pa.schema(
            [
                f.with_type(pa.dictionary(pa.int32(), f.type)) if batch.schema.field(f.name).type != f.type else f
                for f in SCHEMAS[table]
            ]
        )
        assert batch.schema == declared
        assert {f.name for f in declared if f not in SCHEMAS[table]} <= LOW_CARDINALITY[table]
    assert SCHEMAS[tables.LOGS].field("ts").type == pa.timestamp("us", tz="UTC")


def test_clear_forgets_rows_and_bytes() -> None:
    """clear() empties every table and the byte count."""
    buf = ColumnBuffer()
    buf.add_envelope(envelope("logs", [{"ts_ns": BASE_NS, "line": "x" * 100, "stream": "stdout"}]))
    assert buf.rows == 1 and buf.nbytes >= 100 and buf.tables() == [tables.LOGS]
    buf.clear()
    assert buf.rows == 0 and buf.nbytes == 0 and buf.tables() == []


def test_one_bad_record_leaves_the_others_exactly_as_the_fast_path_stores_them() -> None:
    """The per-record path (one bad record) stores the good ones exactly as the fast path does."""
    good = [{"ts_ns": BASE_NS + i, "step": i, "values": {"a": i, "b": 0.5}} for i in range(4)]
    fast, slow = ColumnBuffer(), ColumnBuffer()
    fast.add_envelope(envelope("metrics", good, seq=1))
    slow.add_envelope(envelope("metrics", [*good, {"ts_ns": BASE_NS, "step": True, "values": {"a": 1}}], seq=1))
    assert slow.rows_in(tables.DEAD_LETTERS) == 1
    assert plain(slow.to_arrow(tables.METRICS)).equals(plain(fast.to_arrow(tables.METRICS)))


def test_log_tags_group_and_rank_override_are_stored() -> None:
    """A log record's tags, group and own rank/node are kept; records without them get the envelope's."""
    buf = ColumnBuffer()
    recs = [
        {"ts_ns": BASE_NS, "line": "Traceback", "tags": ["traceback"], "group": "g1", "rank": 3, "node": "n9"},
        {"ts_ns": BASE_NS, "line": "plain"},
    ]
    buf.add_envelope(envelope("logs", recs, rank=0, node="node-0"))
    cols = buf.to_arrow(tables.LOGS).to_pydict()
    assert cols["tags"] == [["traceback"], []] and cols["group"] == ["g1", ""]
    assert cols["rank"] == [3, 0] and cols["node"] == ["n9", "node-0"]


def test_bad_log_tags_become_a_dead_letter() -> None:
    """A tags value that is not a list of strings refuses that record only."""
    buf = ColumnBuffer()
    recs = [{"ts_ns": BASE_NS, "line": "a", "tags": "oom"}, {"ts_ns": BASE_NS, "line": "b"}]
    buf.add_envelope(envelope("logs", recs))
    assert buf.rows_in(tables.LOGS) == 1 and buf.rows_in(tables.DEAD_LETTERS) == 1


def test_metric_source_defaults_to_sdk() -> None:
    """A metric record with source 'log' keeps it; one without is stored as 'sdk'."""
    buf = ColumnBuffer()
    recs = [
        {"ts_ns": BASE_NS, "step": 1, "values": {"loss": 1.0}, "source": "log"},
        {"ts_ns": BASE_NS, "step": 2, "values": {"loss": 0.5}},
    ]
    buf.add_envelope(envelope("metrics", recs))
    assert buf.to_arrow(tables.METRICS).to_pydict()["source"] == ["log", "sdk"]
