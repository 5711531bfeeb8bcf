-- staging.episodes from the episodes ViewDefinition's rows (the temp view episodes_view, one row per
-- current EpisodeOfCare, fhir_mappings/views/definitions/episodes.json). Only derivation here:
-- references parsed to ids, the care manager's PractitionerRole resolved, the period's dates.
CREATE OR REPLACE TABLE staging.episodes AS
SELECT source, episode_id,
       ref_id(patient_reference, 'Patient') AS patient_id,
       status,
       fhir_date(period_start) AS period_start,
       fhir_date(period_end) AS period_end,
       practitioner_of(care_manager_reference, ep.source) AS care_manager_id,
       ref_id(managing_organization_reference, 'Organization') AS managing_organization_id
FROM episodes_view ep
ORDER BY source, episode_id;
