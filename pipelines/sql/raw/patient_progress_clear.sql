-- The pull completed and its watermark is stored: its per-patient progress is spent.
DELETE FROM raw.patient_pull_progress WHERE source = $source AND resource_type = $resource_type
