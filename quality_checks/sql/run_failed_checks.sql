-- Every check of one run that did not pass (or was skipped), worst outcome first.
WITH last_evaluation_per_check AS (
    -- A retried step evaluates a suite twice under one run id: keep each check's last evaluation.
    SELECT *
    FROM quality.check_results
    WHERE run_id = $run_id
    QUALIFY row_number() OVER (PARTITION BY suite, expectation_id ORDER BY checked_at DESC) = 1
)
SELECT table_name, expectation_id, severity, outcome, unexpected_count, quarantined,
       sample_keys::VARCHAR AS sample_keys
FROM last_evaluation_per_check
WHERE outcome <> 'passed'
ORDER BY CASE outcome WHEN 'blocking' THEN 0 WHEN 'contained' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
         table_name, expectation_id;
