-- Work table _qi_responses: One row per completed or amended QuestionnaireResponse (the flattened
-- responses), with the Encounter it was answered at. Read by qi_data_quality.sql.
CREATE OR REPLACE TEMP TABLE _qi_responses AS
SELECT source, response_id, ref_id(encounter_ref, 'Encounter') AS encounter_id
FROM staging.questionnaire_responses
WHERE status IN ('completed', 'amended');
