-- staging.questionnaires: one row per landed Questionnaire (its current version), from the rows
-- fhir_mappings/questionnaires.py registered as `questionnaire_forms_frame`.
CREATE SCHEMA IF NOT EXISTS staging;

CREATE OR REPLACE TABLE staging.questionnaires AS
SELECT source, questionnaire_id, url, version, version_id, name, title, status,
       codes::VARCHAR[] AS codes,              -- Questionnaire.code as 'system|code'
       identifiers::VARCHAR[] AS identifiers,  -- Questionnaire.identifier as 'system|value'
       last_updated::TIMESTAMPTZ AS last_updated
FROM questionnaire_forms_frame;
