-- A stage's own DuckDB memory cap (pipelines.warehouse.stage_memory_limit sets it and restores the value
-- read with current_memory_limit.sql afterwards).
SET memory_limit = $memory_limit;
