-- DuckDB's own memory cap (80% of RAM), restored after a stage with its own cap when the connection had no other
-- (pipelines.warehouse.stage_memory_limit).
RESET memory_limit;
