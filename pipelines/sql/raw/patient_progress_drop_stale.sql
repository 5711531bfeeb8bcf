-- Progress of an older pull (it started from another watermark) does not describe this one.
DELETE FROM raw.patient_pull_progress
WHERE source = $source AND resource_type = $resource_type AND since <> $since
