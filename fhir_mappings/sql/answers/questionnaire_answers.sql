-- One chunk of staging.questionnaire_answers: one row per answer at any depth (item.item and
-- answer.item). The rows come from the ViewDefinition fhir_mappings/views/definitions/
-- questionnaire_answers.json, compiled into the temp view answer_rows over response_chunk
-- (response_chunk.sql); this file types its columns and adds the response's columns.
INSERT INTO staging.questionnaire_answers BY NAME
SELECT response.source, response.response_id, response.version_id, response.status,
       response.questionnaire, response.questionnaire_url, response.questionnaire_version,
       response.subject_ref, response.encounter_ref, response.source_ref, response.author_ref,
       response.authored_at,
       CAST(len(answer.item_positions) AS INTEGER) AS depth,
       answer.link_id,
       -- linkIds from the top joined by ' > ', '?' for a nested item without one; no path at all
       -- when the top-level item has none
       CASE WHEN answer.item_link_ids[1] IS NOT NULL
            THEN array_to_string(list_transform(answer.item_link_ids, lambda l: coalesce(l, '?')), ' > ')
       END AS item_path,
       -- zero-padded positions from the top ('0001.0002'): sorts in form order
       array_to_string(list_transform(answer.item_positions, lambda p: lpad(p::VARCHAR, 4, '0')), '.')
           AS order_path,
       answer.answer_index,
       CASE
           WHEN answer.value_coding IS NOT NULL THEN 'coding'
           WHEN answer.value_integer IS NOT NULL THEN 'integer'
           WHEN answer.value_decimal IS NOT NULL THEN 'decimal'
           WHEN answer.value_boolean IS NOT NULL THEN 'boolean'
           WHEN answer.value_string IS NOT NULL THEN 'string'
           WHEN answer.value_date IS NOT NULL THEN 'date'
           WHEN answer.value_datetime IS NOT NULL THEN 'dateTime'
           WHEN answer.value_quantity IS NOT NULL THEN 'quantity'
           ELSE 'other'
       END AS answer_type,
       answer.value_coding ->> 'system' AS coding_system,
       answer.value_coding ->> 'code' AS coding_code,
       answer.value_coding ->> 'display' AS coding_display,
       TRY_CAST(answer.value_integer AS BIGINT) AS value_integer,
       TRY_CAST(answer.value_decimal AS DOUBLE) AS value_decimal,
       TRY_CAST(answer.value_boolean AS BOOLEAN) AS value_boolean,
       answer.value_string,
       TRY_CAST(answer.value_date AS DATE) AS value_date,
       answer.value_datetime,
       TRY_CAST(answer.value_quantity ->> 'value' AS DOUBLE) AS quantity_value,
       answer.value_quantity ->> 'unit' AS quantity_unit
FROM answer_rows AS answer
JOIN staging.questionnaire_responses AS response
  ON response.source = answer.source
 AND response.response_id = answer.id
 AND response.version_id = answer.version_id;
