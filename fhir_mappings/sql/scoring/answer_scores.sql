-- One row per answer of a scoreable response, with its instrument role and score. Score order: the
-- registry's per-item scores first (the instrument's keying: MARS yes/no, DAI-10 true/false), then the
-- form's own scores (ordinalValue, itemWeight, ...), then the registry's answer table (LOINC LA codes),
-- then a plain numeric answer. The registry wins over the form where it declares the item's scores: a
-- form that sends generic yes = 1 / no = 0 scores would otherwise lose the instrument's keying. On such
-- an item an answer the registry has no score for scores nothing (the response is unmapped as
-- 'unscoreable answer'), never the form's guess; and a form score that disagrees with the registry's is
-- kept in `form_score` beside it, for the mismatch finding (response_routes, measure_scores).
CREATE OR REPLACE TEMP TABLE answer_scores AS
WITH scoreable_responses AS (
    SELECT source, response_id, instrument FROM responses_with_forms
    WHERE status IN ('completed', 'amended') AND instrument IS NOT NULL
),

keyed_items AS (   -- items whose scores the registry declares per answer
    SELECT DISTINCT instrument, item_number FROM registry_item_scores
),

answers_with_scores AS (
    SELECT answer.*, response.instrument, item_map.role, item_map.item_number,
           keyed.item_number IS NOT NULL AS registry_keyed,
           registry_item.score AS registry_item_score,
           coalesce(by_system_code.score, by_code.score, by_integer.score) AS form_score,
           CASE WHEN by_system_code.score IS NOT NULL THEN by_system_code.score_source
                WHEN by_code.score IS NOT NULL THEN by_code.score_source
                WHEN by_integer.score IS NOT NULL THEN by_integer.score_source END AS form_score_source,
           registry_answer.score AS registry_answer_score,
           CASE WHEN answer.answer_type IN ('integer', 'decimal', 'quantity')
                THEN coalesce(answer.value_integer::DOUBLE, answer.value_decimal, answer.quantity_value)
           END AS value_score
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
           ON by_integer.source = answer.source
          AND by_integer.questionnaire = coalesce(answer.questionnaire, '')
          AND by_integer.link_id = answer.link_id
          AND by_integer.value_integer = answer.value_integer AND answer.answer_type = 'integer'
    LEFT JOIN keyed_items AS keyed
           ON keyed.instrument = response.instrument AND keyed.item_number = item_map.item_number
    LEFT JOIN registry_item_scores AS registry_item
           ON registry_item.instrument = response.instrument AND registry_item.item_number = item_map.item_number
          AND registry_item.key = coalesce(answer.coding_code, lower(answer.value_boolean::VARCHAR))
    LEFT JOIN registry_answer_scores AS registry_answer
           ON registry_answer.instrument = response.instrument AND registry_answer.code = answer.coding_code
)

SELECT source, response_id, instrument, link_id, role, item_number, answer_type,
       CASE WHEN role IS DISTINCT FROM 'item' THEN NULL
            WHEN registry_keyed THEN registry_item_score
            ELSE coalesce(form_score, registry_answer_score, value_score)
       END AS score,
       CASE WHEN role IS DISTINCT FROM 'item' THEN NULL
            WHEN registry_keyed AND registry_item_score IS NOT NULL THEN 'registry:item_scores'
            WHEN registry_keyed THEN NULL
            WHEN form_score IS NOT NULL THEN form_score_source
            WHEN registry_answer_score IS NOT NULL THEN 'registry:answer_scores'
            WHEN value_score IS NOT NULL THEN 'answer_value'
       END AS score_source,
       -- the form's own score where the registry keyed the item: compared with the registry's score
       CASE WHEN role = 'item' AND registry_keyed THEN form_score END AS form_score,
       coalesce(value_decimal, value_integer::DOUBLE, quantity_value,
                TRY_CAST(value_string AS DOUBLE)) AS numeric_value,
       coalesce(coding_code, value_boolean::VARCHAR, value_integer::VARCHAR,
                value_decimal::VARCHAR, quantity_value::VARCHAR, value_string,
                answer_type) AS answer_text
FROM answers_with_scores;
