-- Log searches spend their CPU decompressing `text` (scanned by substring and regex
-- searches over the granules the text index cannot rule out) and `line` (the page's 500
-- lines, fetched one by one from wherever the hits are: a whole granule per hit).  LZ4
-- decompresses several times faster than ZSTD and compresses faster too.  Measured at 10M
-- lines (bench/storage.py data, two tables in one process, one thread, CPU per search,
-- ZSTD(1) -> LZ4): keyword 'error' 117 -> 81 ms, phrase 'Traceback (most recent call
-- last)' 163 -> 108 ms, substring 'out of mem' 926 -> 624 ms, regex '(?i)nccl.*error'
-- 2.6 -> 1.4 s; inserts 532k -> 595k rows per CPU-second; the two columns take 1.7x the
-- disk (75 -> 129 MiB each for that repetitive corpus).
-- Only the codec changes (no mutation): parts already stored keep ZSTD until they merge.
ALTER TABLE {db}.logs MODIFY COLUMN line String CODEC(LZ4);

ALTER TABLE {db}.logs MODIFY COLUMN text String MATERIALIZED if(position(line, '\x1b') > 0, replaceRegexpAll(line, '\x1b(\\[[0-?]*[ -/]*[@-~]|\\][^\x07\x1b]*(\x07|\x1b\\\\)|[()*+][0-9A-Za-z]|[=>78])', ''), line) CODEC(LZ4);
