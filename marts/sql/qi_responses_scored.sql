-- Work table _qi_responses: One row per completed or amended QuestionnaireResponse, from the scores when
-- the flattened responses are not in the warehouse (a warehouse scored elsewhere), with the Encounter it
-- was answered at. Read by qi_data_quality.sql.
CREATE OR REPLACE TEMP TABLE _qi_responses AS
SELECT DISTINCT source, response_id, ref_id(encounter_ref, 'Encounter') AS encounter_id
FROM staging.measure_scores
WHERE status IN ('completed', 'amended');
