-- The PractitionerRole a Task is owned by: One row per practitioner of a source, their active role
-- first (staging.practitioner_roles).
SELECT practitioner_id, arg_min(role_id, (NOT coalesce(active, TRUE), role_id)) AS role_id
FROM staging.practitioner_roles
WHERE source = $source AND practitioner_id IS NOT NULL
GROUP BY practitioner_id
ORDER BY practitioner_id;
