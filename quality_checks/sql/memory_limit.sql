-- DuckDB's memory cap while the suites run (quality_checks/runner.py sets it and restores the previous
-- value after): spooled datasets beyond it go to DuckDB's temporary directory instead of RAM.
SET memory_limit = $memory_limit;
