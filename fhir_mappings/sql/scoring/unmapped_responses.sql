-- staging.unmapped_responses: one row per current, finished response no instrument can score, with
-- the reason (unknown questionnaire, unmapped items, unscoreable answer) and the detail.
CREATE OR REPLACE TABLE staging.unmapped_responses AS
SELECT source, response_id, version_id, status, questionnaire, instrument,
       route_reason AS reason, route_detail AS detail, answers::INTEGER AS answers,
       patient_ref, encounter_ref, authored_at
FROM response_routes
WHERE route = 'unmapped'
ORDER BY source, response_id;
