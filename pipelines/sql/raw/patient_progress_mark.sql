-- Patients whose searches of one type have landed, in one statement (lists bound element-wise;
-- idempotent: a patient landed twice keeps one row). pull_started is the server time the pull (the
-- first attempt, when this one resumes it) began: the watermark it stores at the end.
INSERT INTO raw.patient_pull_progress
    (source, resource_type, since, patient_id, max_last_updated, run_id, done_at, pull_started)
SELECT $source, $resource_type, $since, u.patient_id, u.max_last_updated, $run_id, now(), $pull_started
FROM (SELECT unnest($patient_ids::VARCHAR[]) AS patient_id,
             unnest($max_last_updated::VARCHAR[]) AS max_last_updated) AS u
ON CONFLICT (source, resource_type, patient_id) DO UPDATE SET
    since = excluded.since, max_last_updated = excluded.max_last_updated,
    run_id = excluded.run_id, done_at = excluded.done_at, pull_started = excluded.pull_started
