CREATE OR REPLACE TABLE staging.encounters AS
WITH encounter_versions AS (
    SELECT source, id, resource,
           CAST(resource -> '$.participant' AS JSON[]) AS parts
    FROM current_version('raw.encounter')
),
with_practitioner AS (
    SELECT *,
           -- the primary performer when one is marked, else the first practitioner participant
           coalesce(
               list_filter(parts, lambda p: list_contains(p ->> '$.type[*].coding[*].code', 'PPRF')
                           AND ref_type(p ->> '$.individual.reference')
                               IN ('Practitioner', 'PractitionerRole'))[1],
               list_filter(parts, lambda p: ref_type(p ->> '$.individual.reference')
                           IN ('Practitioner', 'PractitionerRole'))[1]
           ) ->> '$.individual.reference' AS practitioner_ref
    FROM encounter_versions
)
SELECT source, id AS encounter_id,
       resource ->> 'status' AS status,
       resource -> 'class' ->> 'code' AS class_code,
       ref_id(resource -> 'subject' ->> 'reference', 'Patient') AS patient_id,
       ref_id((resource ->> '$.episodeOfCare[*].reference')[1], 'EpisodeOfCare')
           AS episode_of_care_id,
       practitioner_of(practitioner_ref, with_practitioner.source) AS practitioner_id,
       ref_id(resource -> 'serviceProvider' ->> 'reference', 'Organization') AS clinic_id,
       TRY_CAST(resource -> 'period' ->> 'start' AS TIMESTAMPTZ) AS period_start,
       TRY_CAST(resource -> 'period' ->> 'end' AS TIMESTAMPTZ) AS period_end,
       fhir_date(resource -> 'period' ->> 'start') AS start_date,
       ref_id((resource ->> '$.appointment[*].reference')[1], 'Appointment') AS appointment_id
FROM with_practitioner
ORDER BY source, encounter_id;
