-- The columns staging.measure_scores has now (session_measures checks its contract before reading it).
SELECT column_name
FROM information_schema.columns
WHERE table_schema = 'staging' AND table_name = 'measure_scores'
