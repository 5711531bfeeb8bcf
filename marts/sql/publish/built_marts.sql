-- The marts built in one database of the connection (to refuse publishing a mart not built yet).
SELECT table_name
FROM duckdb_tables()
WHERE database_name = $catalog AND schema_name = 'marts';
