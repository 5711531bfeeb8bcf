-- The benchmark's DuckDB memory cap (an experiment knob; the pipeline keeps DuckDB's default).
SET memory_limit = $memory_limit;
