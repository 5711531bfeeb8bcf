-- staging.encounters from the encounters ViewDefinition's rows (the temp view encounters_view, one
-- row per current Encounter, fhir_mappings/views/definitions/encounters.json). Only derivation here:
-- the practitioner, references parsed to ids, the period's timestamps and start date.
CREATE OR REPLACE TABLE staging.encounters AS
SELECT source, encounter_id,
       status,
       class_code,
       ref_id(subject_reference, 'Patient') AS patient_id,
       ref_id(episode_of_care_reference, 'EpisodeOfCare') AS episode_of_care_id,
       -- the primary performer when one is marked, else the first practitioner participant; a
       -- PractitionerRole resolved to its Practitioner
       practitioner_of(
           coalesce(
               list_filter(performer_references,
                           lambda r: ref_type(r) IN ('Practitioner', 'PractitionerRole'))[1],
               list_filter(participant_references,
                           lambda r: ref_type(r) IN ('Practitioner', 'PractitionerRole'))[1]
           ),
           source
       ) AS practitioner_id,
       ref_id(service_provider_reference, 'Organization') AS clinic_id,
       TRY_CAST(period_start AS TIMESTAMPTZ) AS period_start,
       TRY_CAST(period_end AS TIMESTAMPTZ) AS period_end,
       fhir_date(period_start) AS start_date,
       ref_id(appointment_reference, 'Appointment') AS appointment_id
FROM encounters_view
ORDER BY source, encounter_id;
