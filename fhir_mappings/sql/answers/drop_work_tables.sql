-- The flatten's temporary relations (also dropped after a failed chunk).
DROP VIEW IF EXISTS answer_rows;
DROP TABLE IF EXISTS response_chunk;
DROP TABLE IF EXISTS current_response_versions;
