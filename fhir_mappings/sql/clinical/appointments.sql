-- staging.appointments from the appointments ViewDefinition's rows (the temp view appointments_view,
-- one row per current Appointment, fhir_mappings/views/definitions/appointments.json). Only
-- derivation here: the patient and the practitioner picked from the participants' references by
-- type (a PractitionerRole resolved to its Practitioner), the start's timestamp and date.
CREATE OR REPLACE TABLE staging.appointments AS
SELECT source, appointment_id,
       ref_id(list_filter(actor_references, lambda r: ref_type(r) = 'Patient')[1], 'Patient')
           AS patient_id,
       practitioner_of(
           list_filter(actor_references,
                       lambda r: ref_type(r) IN ('Practitioner', 'PractitionerRole'))[1],
           source
       ) AS practitioner_id,
       status,
       TRY_CAST(start AS TIMESTAMPTZ) AS start_at,
       fhir_date(start) AS start_date
FROM appointments_view
ORDER BY source, appointment_id;
