-- DuckDB's own memory cap (80% of RAM), restored after the suites when the connection had no other.
RESET memory_limit;
