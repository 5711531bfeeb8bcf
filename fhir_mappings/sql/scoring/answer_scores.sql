-- One row per answer of a scoreable response, with its instrument role and score. Score order: the
-- form's own scores, then the registry's per-item scores (yes/no, true/false items), then the
-- registry's answer table (LOINC LA codes), then a plain numeric answer.
CREATE OR REPLACE TEMP TABLE answer_scores AS
WITH scoreable_responses AS (
    SELECT source, response_id, instrument FROM responses_with_forms
    WHERE status IN ('completed', 'amended') AND instrument IS NOT NULL
)
SELECT answer.source, answer.response_id, response.instrument, answer.link_id, item_map.role,
       item_map.item_number, answer.answer_type,
       CASE WHEN item_map.role = 'item' THEN coalesce(
           by_system_code.score, by_code.score, by_integer.score, registry_item.score, registry_answer.score,
           CASE WHEN answer.answer_type IN ('integer', 'decimal', 'quantity')
                THEN coalesce(answer.value_integer::DOUBLE, answer.value_decimal, answer.quantity_value) END)
       END AS score,
       CASE WHEN item_map.role <> 'item' THEN NULL
            WHEN by_system_code.score IS NOT NULL THEN by_system_code.score_source
            WHEN by_code.score IS NOT NULL THEN by_code.score_source
            WHEN by_integer.score IS NOT NULL THEN by_integer.score_source
            WHEN registry_item.score IS NOT NULL THEN 'registry:item_scores'
            WHEN registry_answer.score IS NOT NULL THEN 'registry:answer_scores'
            WHEN answer.answer_type IN ('integer', 'decimal', 'quantity')
                 AND coalesce(answer.value_integer::DOUBLE, answer.value_decimal, answer.quantity_value) IS NOT NULL
                THEN 'answer_value'
       END AS score_source,
       coalesce(answer.value_decimal, answer.value_integer::DOUBLE, answer.quantity_value,
                TRY_CAST(answer.value_string AS DOUBLE)) AS numeric_value,
       coalesce(answer.coding_code, answer.value_boolean::VARCHAR, answer.value_integer::VARCHAR,
                answer.value_decimal::VARCHAR, answer.quantity_value::VARCHAR, answer.value_string,
                answer.answer_type) AS answer_text
FROM staging.questionnaire_answers AS answer
JOIN scoreable_responses AS response
  ON response.source = answer.source AND response.response_id = answer.response_id
LEFT JOIN staging.form_item_map AS item_map
       ON item_map.source = answer.source AND item_map.questionnaire = coalesce(answer.questionnaire, '')
      AND item_map.link_id = answer.link_id
LEFT JOIN form_scores_by_system_code AS by_system_code
       ON by_system_code.source = answer.source
      AND by_system_code.questionnaire = coalesce(answer.questionnaire, '')
      AND by_system_code.link_id = answer.link_id
      AND by_system_code.system = answer.coding_system AND by_system_code.code = answer.coding_code
LEFT JOIN form_scores_by_code AS by_code
       ON by_code.source = answer.source AND by_code.questionnaire = coalesce(answer.questionnaire, '')
      AND by_code.link_id = answer.link_id
      AND by_code.code = answer.coding_code
LEFT JOIN form_scores_by_integer AS by_integer
       ON by_integer.source = answer.source AND by_integer.questionnaire = coalesce(answer.questionnaire, '')
      AND by_integer.link_id = answer.link_id
      AND by_integer.value_integer = answer.value_integer AND answer.answer_type = 'integer'
LEFT JOIN registry_item_scores AS registry_item
       ON registry_item.instrument = response.instrument AND registry_item.item_number = item_map.item_number
      AND registry_item.key = coalesce(answer.coding_code, lower(answer.value_boolean::VARCHAR))
LEFT JOIN registry_answer_scores AS registry_answer
       ON registry_answer.instrument = response.instrument AND registry_answer.code = answer.coding_code;
