CREATE OR REPLACE TABLE staging.appointments AS
    WITH appointment_versions AS (
        SELECT source, id, resource,
               resource ->> '$.participant[*].actor.reference' AS actors
        FROM current_version('raw.appointment')
    )
    SELECT source, id AS appointment_id,
           ref_id(list_filter(actors, lambda r: ref_type(r) = 'Patient')[1], 'Patient') AS patient_id,
           practitioner_of(list_filter(actors, lambda r: ref_type(r) IN ('Practitioner', 'PractitionerRole'))[1], source) AS practitioner_id,
           resource ->> 'status' AS status,
           TRY_CAST(resource ->> 'start' AS TIMESTAMPTZ) AS start_at,
           fhir_date(resource ->> 'start') AS start_date
    FROM appointment_versions
    ORDER BY source, appointment_id;
