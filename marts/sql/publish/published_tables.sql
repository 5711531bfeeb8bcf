-- The tables of a published file attached as `published`.
SELECT table_name
FROM duckdb_tables()
WHERE database_name = 'published'
ORDER BY 1;
