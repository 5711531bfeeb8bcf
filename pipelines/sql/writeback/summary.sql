-- What a run wrote back: One row per source x resource type x outcome of the run's attempts.
SELECT source, resource_type, outcome, count(*) AS attempts
FROM ops.writeback_log
WHERE run_id = $run_id
GROUP BY ALL
ORDER BY source, resource_type, outcome;
