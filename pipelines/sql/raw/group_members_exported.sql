-- The Group members whose history earlier exports of this type already brought.
SELECT patient_id
FROM raw.group_members
WHERE source = $source AND resource_type = $resource_type AND group_id = $group_id
