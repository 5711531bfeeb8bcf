-- The columns of a table of the published file, one row each (their count is recorded in _published).
SELECT column_name
FROM duckdb_columns()
WHERE database_name = $catalog AND schema_name = $schema AND table_name = $table
ORDER BY column_index;
