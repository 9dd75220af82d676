"""ClickHouse table names: the contract between the sinks and the UI."""

from __future__ import annotations

DATABASE = "runstream"

RUN_EVENTS = "run_events"
METRICS = "metrics"
LOGS = "logs"
RESOURCES = "resources"
EVALS = "evals"
ALERTS = "alerts"
DEAD_LETTERS = "dead_letters"
MIGRATIONS = "schema_migrations"
#: last/min/max per run and metric, kept by a materialized view (the run table reads it).
METRIC_SUMMARY = "metric_summary"
#: offsets of each insert, so that a replay after a crash reuses the same dedup tokens.
SINK_SPANS = "sink_spans"

#: Which table stores each record kind.
TABLE_FOR_KIND: dict[str, str] = {
    "runs": RUN_EVENTS,
    "metrics": METRICS,
    "logs": LOGS,
    "resources": RESOURCES,
    "evals": EVALS,
}
