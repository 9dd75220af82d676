-- The logs' skip indexes (text, tags) are built when parts merge, not on insert (sinks.store).
-- The merge selector leaves the last few parts of a burst alone until more parts of their
-- size arrive, so after a run stopped writing those parts could stay unindexed for good:
-- bench/storage.py measured 4 of 10 parts of a 1M-line bulk insert still unmerged 30 s later,
-- and searches over the run 2-8x slower than after a merge (a scan of the unindexed parts).
-- A partition whose parts are all older than 30 s (nothing written to it for 30 s) is merged
-- into one part, indexed.  Only whole idle partitions: while lines keep arriving the usual
-- merges run, so a busy day's partition is not rewritten over and over.
ALTER TABLE {db}.logs MODIFY SETTING min_age_to_force_merge_seconds = 30, min_age_to_force_merge_on_partition_only = 1;
