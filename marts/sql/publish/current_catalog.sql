-- The warehouse connection's own database: its catalog name and file path (NULL in memory).
SELECT database_name, path
FROM duckdb_databases()
WHERE database_name = current_database();
