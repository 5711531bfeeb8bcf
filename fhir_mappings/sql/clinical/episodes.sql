CREATE OR REPLACE TABLE staging.episodes AS
SELECT source, id AS episode_id,
       ref_id(resource -> 'patient' ->> 'reference', 'Patient') AS patient_id,
       resource ->> 'status' AS status,
       fhir_date(resource -> 'period' ->> 'start') AS period_start,
       fhir_date(resource -> 'period' ->> 'end') AS period_end,
       practitioner_of(resource -> 'careManager' ->> 'reference', ep.source)
           AS care_manager_id,
       ref_id(resource -> 'managingOrganization' ->> 'reference', 'Organization')
           AS managing_organization_id
FROM current_version('raw.episode_of_care') ep
ORDER BY source, episode_id;
