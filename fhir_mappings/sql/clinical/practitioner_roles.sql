CREATE OR REPLACE TABLE staging.practitioner_roles AS
SELECT source, id AS role_id,
       ref_id(resource -> 'practitioner' ->> 'reference', 'Practitioner') AS practitioner_id,
       ref_id(resource -> 'organization' ->> 'reference', 'Organization') AS organization_id,
       TRY_CAST(resource ->> 'active' AS BOOLEAN) AS active,
       (resource ->> '$.code[*].coding[*].code')[1] AS role_code
FROM current_version('raw.practitioner_role')
ORDER BY source, role_id;
