-- Patients an interrupted patient-scoped pull (same source, type and starting watermark) already landed.
SELECT patient_id, max_last_updated
FROM raw.patient_pull_progress
WHERE source = $source AND resource_type = $resource_type AND since = $since
