-- Members now covered by a pull of this type (kept once, with the first run that covered them).
INSERT INTO raw.group_members
SELECT $source, $resource_type, $group_id, u.patient_id, $run_id, now()
FROM (SELECT unnest($patient_ids::VARCHAR[]) AS patient_id) AS u
ON CONFLICT DO NOTHING
