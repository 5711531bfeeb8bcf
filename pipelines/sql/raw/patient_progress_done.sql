-- Patients an interrupted patient-scoped pull (same source, type and starting watermark) already
-- landed, and the server time that pull began.
SELECT patient_id, max_last_updated, pull_started
FROM raw.patient_pull_progress
WHERE source = $source AND resource_type = $resource_type AND since = $since
