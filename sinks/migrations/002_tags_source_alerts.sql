-- What the stream processors add to clean records (contract of 2026-11: signatures,
-- multi-line groups, metrics parsed from log lines, alerts).  Append-only: 001 stays as released.

-- Log signatures (`oom`, `traceback`, ...) and the id shared by the lines of one
-- multi-line error.  Searchable by tag: has(tags, 'oom') prunes granules by the bloom filter.
ALTER TABLE {db}.logs ADD COLUMN IF NOT EXISTS tags Array(LowCardinality(String)) AFTER line;
ALTER TABLE {db}.logs ADD COLUMN IF NOT EXISTS `group` String CODEC(ZSTD(1)) AFTER tags;
ALTER TABLE {db}.logs ADD INDEX IF NOT EXISTS tags_idx tags TYPE bloom_filter(0.01) GRANULARITY 1;

-- Most lines carry no escape sequence: skip the regex for them (measured in
-- bench/storage.py: the regex costs ~20 % of a log insert).  Same result, cheaper insert;
-- rows stored before keep the text computed then, which is the same text.
ALTER TABLE {db}.logs MODIFY COLUMN text String MATERIALIZED if(position(line, '\x1b') > 0, replaceRegexpAll(line, '\x1b(\\[[0-?]*[ -/]*[@-~]|\\][^\x07\x1b]*(\x07|\x1b\\\\)|[()*+][0-9A-Za-z]|[=>78])', ''), line) CODEC(ZSTD(1));

-- Where a metric point came from: the SDK (`run.log`) or a number parsed from a log line.
ALTER TABLE {db}.metrics ADD COLUMN IF NOT EXISTS source LowCardinality(String) DEFAULT 'sdk' AFTER value;

-- Alerts: 001's table was never written by any release (no sink consumed the topic) and
-- had no alert identity, so it is dropped and made again with the contract's fields.
-- At most one row per (run, key): `key` is the alert's deterministic id, so a replay or
-- two stream workers raising the same alert collapse here.  ReplacingMergeTree keeps one
-- row per sorting key after merges and readers use FINAL, so none ever shows twice.
-- No partition key: replacing only works within a partition and an alert's ts may differ
-- between two detections; the table is small, so the TTL deletes rows in merges.
DROP TABLE IF EXISTS {db}.alerts;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    run_id      String,
    key         String,
    ts          DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    kind        LowCardinality(String),
    severity    LowCardinality(String),
    message     String CODEC(ZSTD(1)),
    node        LowCardinality(String),
    rank        Int32,
    metric      LowCardinality(String),
    value       Nullable(Float64),
    producer    String,
    seq         UInt64,
    idx         UInt32,
    ingest_ts   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
ORDER BY (run_id, key)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000;
