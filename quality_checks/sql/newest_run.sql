-- The run id of the newest check result.
SELECT run_id
FROM quality.check_results
ORDER BY checked_at DESC, run_id
LIMIT 1;
