-- The checkpoint threshold in force (pipelines/ndjson_landing.py restores it after landing a file).
SELECT current_setting('checkpoint_threshold')
