-- One patient's searches of one type have landed (idempotent: a patient landed twice keeps one row).
INSERT INTO raw.patient_pull_progress
VALUES ($source, $resource_type, $since, $patient_id, $max_last_updated, $run_id, now())
ON CONFLICT (source, resource_type, patient_id) DO UPDATE SET
    since = excluded.since, max_last_updated = excluded.max_last_updated,
    run_id = excluded.run_id, done_at = excluded.done_at
