-- The connection's DuckDB memory cap in force (restored after a stage ran with its own).
SELECT current_setting('memory_limit')
