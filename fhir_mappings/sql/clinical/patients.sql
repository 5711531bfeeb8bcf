CREATE OR REPLACE TABLE staging.patients AS
WITH patient_versions AS (
    SELECT source, id, resource ->> 'birthDate' AS birth, resource
    FROM current_version('raw.patient')
)
SELECT pv.source, pv.id AS patient_id,
       pv.resource ->> 'gender' AS gender,
       TRY_CAST(left(pv.birth, 4) AS INTEGER) AS birth_year,
       m.as_of_date AS reference_date,
       age_at(pv.birth, m.as_of_date) AS age_years,
       age_band(age_at(pv.birth, m.as_of_date)) AS age_band,
       ref_id(pv.resource -> 'managingOrganization' ->> 'reference', 'Organization')
           AS managing_organization_id,
       TRY_CAST(pv.resource ->> 'active' AS BOOLEAN) AS active,
       coalesce(TRY_CAST(pv.resource ->> 'deceasedBoolean' AS BOOLEAN), FALSE)
           OR pv.resource ->> 'deceasedDateTime' IS NOT NULL AS deceased
FROM patient_versions pv CROSS JOIN mart_params m
ORDER BY pv.source, patient_id;
