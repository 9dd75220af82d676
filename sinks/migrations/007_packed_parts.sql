-- Small parts of the small-row tables are written packed: all of a part's files in one (min_bytes_for_full_part_storage).
-- The sink inserts every few hundred milliseconds, so most parts it writes are small, and chDB
-- spends a fixed cost per part on its files; a packed part costs less to write and to merge
-- (bench/sink.py).  Parts at or above the threshold (merged parts) keep full storage, so what
-- searches and charts read once parts have merged is what it was.
ALTER TABLE {db}.metrics MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.metric_summary MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.metric_rollup MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.resources MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.alerts MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.run_events MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.evals MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.dead_letters MODIFY SETTING min_bytes_for_full_part_storage = 33554432;

ALTER TABLE {db}.sink_spans MODIFY SETTING min_bytes_for_full_part_storage = 33554432;
