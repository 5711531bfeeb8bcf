-- The connection's DuckDB memory cap, restored after the suites ran with their own.
SELECT current_setting('memory_limit');
