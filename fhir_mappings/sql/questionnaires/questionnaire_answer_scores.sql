-- staging.questionnaire_answer_scores: one row per scored answer option of an item of each current
-- Questionnaire, with where the score came from (ordinalValue, questionnaire-ordinalValue, itemWeight,
-- or 'valueset:' + one of those for a contained ValueSet/CodeSystem), from the rows registered as
-- `questionnaire_answer_scores_frame`.
CREATE OR REPLACE TABLE staging.questionnaire_answer_scores AS
SELECT source, questionnaire_id, url, version, link_id, system, code,
       value_integer::BIGINT AS value_integer,
       score::DOUBLE AS score,
       score_source
FROM questionnaire_answer_scores_frame;
