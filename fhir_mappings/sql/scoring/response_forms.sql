-- staging.response_forms: one row per (source, cited questionnaire value): which landed Questionnaire
-- it resolved to and how, which instrument was recognised and by what, or why none could be
-- (fhir_mappings/recognition.py, registered as `response_forms_frame`).
CREATE SCHEMA IF NOT EXISTS staging;

CREATE OR REPLACE TABLE staging.response_forms AS
SELECT source::VARCHAR AS source,
       questionnaire::VARCHAR AS questionnaire,
       questionnaire_source::VARCHAR AS questionnaire_source,
       questionnaire_id::VARCHAR AS questionnaire_id,
       questionnaire_version::VARCHAR AS questionnaire_version,
       resolution::VARCHAR AS resolution,
       instrument::VARCHAR AS instrument,
       recognised_by::VARCHAR AS recognised_by,
       reason::VARCHAR AS reason,
       detail::VARCHAR AS detail
FROM response_forms_frame;
