-- The flatten's temporary tables (also dropped after a failed chunk).
DROP TABLE IF EXISTS response_chunk;
DROP TABLE IF EXISTS current_response_versions;
