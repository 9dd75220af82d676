-- Initial schema.  Migrations are append-only: never edit a released file, add one.
-- {db} is replaced by the database name (an identifier checked by the store).
-- Times are DateTime64(6, 'UTC'); retention is a TTL (logs and dead letters 30 days,
-- the rest 90) that drops whole daily partitions (ttl_only_drop_parts).
-- non_replicated_deduplication_window lets the sink's insert_deduplication_token
-- make a replayed batch a no-op.

CREATE TABLE IF NOT EXISTS {db}.run_events
(
    run_id      String,
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    event       LowCardinality(String),
    project     LowCardinality(String),
    name        String,
    node        LowCardinality(String),
    rank        Int32,
    status      LowCardinality(String),
    exit_code   Nullable(Int32),
    reason      String,
    config      String CODEC(ZSTD(1)),
    tags        Array(String),
    host        String,
    pid         UInt32,
    world_size  UInt32,
    argv        Array(String),
    producer    String,
    seq         UInt64,
    idx         UInt32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, ts, producer, seq, idx)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.metrics
(
    run_id      String,
    name        LowCardinality(String),
    step        Int64 CODEC(Delta, ZSTD(1)),
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    value       Float64 CODEC(Gorilla, ZSTD(1)),
    node        LowCardinality(String),
    rank        Int32,
    producer    String,
    seq         UInt64,
    idx         UInt32,
    sub         UInt16,
    ingest_ts   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, name, step, ts, producer, seq, idx, sub)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- `text` is what search reads: the line without ANSI escape sequences (CSI such as
-- colours and cursor moves, OSC such as hyperlinks and titles, charset selection).
-- The text index is over lower(text): the search is case-insensitive, and the
-- engine prunes granules with the whole tokens of a `lower(text) LIKE` pattern.
CREATE TABLE IF NOT EXISTS {db}.logs
(
    run_id      String,
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    node        LowCardinality(String),
    rank        Int32,
    stream      LowCardinality(String),
    level       LowCardinality(String),
    logger      LowCardinality(String),
    line        String CODEC(ZSTD(1)),
    text        String MATERIALIZED replaceRegexpAll(line, '\x1b(\\[[0-?]*[ -/]*[@-~]|\\][^\x07\x1b]*(\x07|\x1b\\\\)|[()*+][0-9A-Za-z]|[=>78])', '') CODEC(ZSTD(1)),
    orig_bytes  UInt32,
    producer    String,
    seq         UInt64,
    idx         UInt32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    INDEX text_idx lower(text) TYPE text(tokenizer = splitByNonAlpha)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, ts, producer, seq, idx)
TTL toDateTime(ts) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.resources
(
    run_id      String,
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    node        LowCardinality(String),
    rank        Int32,
    device      LowCardinality(String),
    name        LowCardinality(String),
    value       Float64 CODEC(Gorilla, ZSTD(1)),
    producer    String,
    seq         UInt64,
    idx         UInt32,
    sub         UInt16,
    ingest_ts   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, device, name, ts)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.evals
(
    run_id      String,
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    node        LowCardinality(String),
    rank        Int32,
    name        String,
    type        LowCardinality(String),
    data        String CODEC(ZSTD(1)),
    producer    String,
    seq         UInt64,
    idx         UInt32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, name, ts, producer, seq, idx)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    run_id      String,
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    kind        LowCardinality(String),
    message     String,
    node        LowCardinality(String),
    rank        Int32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, ts)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    topic       LowCardinality(String),
    partition   Int32,
    offset      Int64,
    reason      String,
    sample      String CODEC(ZSTD(1)),
    producer    String,
    seq         Int64,
    idx         Int32,
    run_id      String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (ts, topic, partition, offset, idx)
TTL toDateTime(ts) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

-- Last/min/max per run and metric, kept up to date on every insert into `metrics`,
-- so that the run list never scans raw points.  NaN is left out of min/max
-- (NULL when a metric has only NaN); `last` is the value at the highest step, then
-- the latest time.
CREATE TABLE IF NOT EXISTS {db}.metric_summary
(
    run_id      String,
    name        LowCardinality(String),
    last_value  AggregateFunction(argMax, Float64, Tuple(Int64, DateTime64(6, 'UTC'))),
    min_value   AggregateFunction(minOrNullIf, Float64, UInt8),
    max_value   AggregateFunction(maxOrNullIf, Float64, UInt8),
    points      SimpleAggregateFunction(sum, UInt64),
    last_ts     SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (run_id, name)
TTL toDateTime(last_ts) + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.metric_summary_mv TO {db}.metric_summary AS
SELECT
    run_id,
    name,
    argMaxState(value, (step, ts)) AS last_value,
    minOrNullIfState(value, NOT isNaN(value)) AS min_value,
    maxOrNullIfState(value, NOT isNaN(value)) AS max_value,
    count() AS points,
    max(ts) AS last_ts
FROM {db}.metrics
GROUP BY run_id, name;

-- The sink's insert log: which offsets of which partition went into one insert
-- (written before the insert).  After a crash between insert and commit, the
-- sink cuts the replayed messages at the same offsets, so the inserts carry the
-- same deduplication tokens and are stored once.  `first_digest` tells a span of
-- this topic's log from one of a recreated topic (an in-memory broker restarts at 0).
-- A day is far longer than the deduplication window it serves.
CREATE TABLE IF NOT EXISTS {db}.sink_spans
(
    topic        LowCardinality(String),
    partition    Int32,
    first_offset Int64,
    last_offset  Int64,
    first_digest String,
    ts           DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (topic, partition, last_offset)
TTL toDateTime(ts) + INTERVAL 1 DAY
SETTINGS ttl_only_drop_parts = 1;
