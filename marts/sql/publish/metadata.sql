-- _published: one row per published mart, what it holds and where it came from.
CREATE TABLE {{ metadata }} (
    table_name VARCHAR,
    row_count BIGINT,
    column_count INTEGER,
    built_at TIMESTAMPTZ,
    run_id VARCHAR,
    source_warehouse VARCHAR,
    pipeline_version VARCHAR,
    pseudonyms VARCHAR,          -- what the key columns are, never anything derived from the key
    storage_version VARCHAR,
    parquet_file VARCHAR         -- relative to the publish folder
);
