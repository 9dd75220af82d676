-- A coarse copy of every metric series for charts of whole runs: per block of 256
-- steps (block = step >> 8, floor for negative steps), the lowest and the highest
-- finite point as (value, step) tuples (ties: lowest step for the low, highest for the high), the
-- first NaN's step, and how many finite and NaN points.  A chart whose buckets span
-- whole blocks merges a few thousand of these rows instead of scanning a million
-- points (bench/storage.py: ~150 ms -> a few ms for 1M points), and keeps every
-- bucket's extremes exactly.  min/max merge idempotently, so a block counted twice
-- (the backfill below racing an insert) still gives the right extremes; the counts
-- are not used for totals, which come from `metrics`.
CREATE TABLE IF NOT EXISTS {db}.metric_rollup
(
    run_id      String,
    name        LowCardinality(String),
    block       Int64,
    low         AggregateFunction(minIf, Tuple(Float64, Int64), UInt8),
    high        AggregateFunction(maxIf, Tuple(Float64, Int64), UInt8),
    nan_step    AggregateFunction(minIf, Int64, UInt8),
    finite      SimpleAggregateFunction(sum, UInt64),
    nans        SimpleAggregateFunction(sum, UInt64),
    last_ts     SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (run_id, name, block)
TTL toDateTime(last_ts) + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.metric_rollup_mv TO {db}.metric_rollup AS
SELECT
    run_id,
    name,
    bitShiftRight(step, 8) AS block,
    minIfState((value, step), NOT isNaN(value)) AS low,
    maxIfState((value, step), NOT isNaN(value)) AS high,
    minIfState(step, isNaN(value)) AS nan_step,
    countIf(NOT isNaN(value)) AS finite,
    countIf(isNaN(value)) AS nans,
    max(ts) AS last_ts
FROM {db}.metrics
GROUP BY run_id, name, block;

-- Points stored before this migration.
INSERT INTO {db}.metric_rollup
SELECT
    run_id,
    name,
    bitShiftRight(step, 8) AS block,
    minIfState((value, step), NOT isNaN(value)),
    maxIfState((value, step), NOT isNaN(value)),
    minIfState(step, isNaN(value)),
    countIf(NOT isNaN(value)),
    countIf(isNaN(value)),
    max(ts)
FROM {db}.metrics
GROUP BY run_id, name, block;
