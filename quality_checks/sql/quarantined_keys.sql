-- The records one run has already quarantined for one check (a retried step must not write them twice).
SELECT coalesce(source, '') AS source, record_key
FROM quality.quarantine
WHERE run_id = $run_id AND table_name = $table_name AND expectation_id = $expectation_id;
