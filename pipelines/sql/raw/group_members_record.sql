-- A member now covered by an export of this type (kept once, with the first run that covered it).
INSERT INTO raw.group_members
VALUES ($source, $resource_type, $group_id, $patient_id, $run_id, now())
ON CONFLICT DO NOTHING
