CREATE OR REPLACE TABLE staging.practitioners AS
SELECT source, id AS practitioner_id,
       TRY_CAST(resource ->> 'active' AS BOOLEAN) AS active,
       resource ->> 'gender' AS gender
FROM current_version('raw.practitioner')
ORDER BY source, practitioner_id;
