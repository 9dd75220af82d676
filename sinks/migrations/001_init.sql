-- Initial schema. Migrations are append-only: never edit a released file.
-- {db} is replaced by the database name (an identifier checked by migrate.py).

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
    config      String CODEC(ZSTD(3)),
    tags        Array(String),
    host        String,
    pid         UInt32,
    world_size  UInt32,
    argv        Array(String),
    producer    String,
    seq         UInt64,
    idx         UInt32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1))
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
    ingest_ts   DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, name, step, ts, producer, seq, idx, sub)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS {db}.logs
(
    run_id      String,
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    node        LowCardinality(String),
    rank        Int32,
    stream      LowCardinality(String),
    level       LowCardinality(String),
    logger      LowCardinality(String),
    line        String CODEC(ZSTD(3)),
    -- what search reads: the line without ANSI escape sequences
    text        String MATERIALIZED replaceRegexpAll(line, '\x1b\\[[0-9;?]*[ -/]*[@-~]', '') CODEC(ZSTD(3)),
    orig_bytes  UInt32,
    producer    String,
    seq         UInt64,
    idx         UInt32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    INDEX text_idx text TYPE text(tokenizer = splitByNonAlpha)
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
    ingest_ts   DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (run_id, device, name, ts, producer, seq, idx, sub)
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
    data        String CODEC(ZSTD(3)),
    producer    String,
    seq         UInt64,
    idx         UInt32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1))
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
    ingest_ts   DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1))
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
    sample      String CODEC(ZSTD(3)),
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
