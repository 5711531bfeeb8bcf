-- One row per (table, severity) of one run: checks run, passed, failed, skipped, blocking, rows
-- quarantined, pass rate (passed / (passed + failed); skipped checks count in neither).
WITH last_evaluation_per_check AS (
    -- A retried step evaluates a suite twice under one run id: keep each check's last evaluation.
    SELECT *
    FROM quality.check_results
    WHERE run_id = $run_id
    QUALIFY row_number() OVER (PARTITION BY suite, expectation_id ORDER BY checked_at DESC) = 1
)
SELECT run_id, table_name, severity,
       count(*)::INTEGER AS checks_run,
       count(*) FILTER (WHERE success)::INTEGER AS passed,
       count(*) FILTER (WHERE NOT success)::INTEGER AS failed,
       count(*) FILTER (WHERE success IS NULL)::INTEGER AS skipped,
       count(*) FILTER (WHERE outcome = 'blocking')::INTEGER AS blocking,
       coalesce(sum(quarantined), 0)::BIGINT AS quarantined_rows,
       round(count(*) FILTER (WHERE success)
             / nullif(count(*) FILTER (WHERE success IS NOT NULL), 0), 4) AS pass_rate
FROM last_evaluation_per_check
GROUP BY run_id, table_name, severity
ORDER BY table_name, severity;
