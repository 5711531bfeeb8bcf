-- How much write-ahead log DuckDB lets grow before it checkpoints (pipelines/ndjson_landing.py raises it
-- while a large file lands, then restores the value read with current_checkpoint_threshold.sql).
SET checkpoint_threshold = $threshold;
