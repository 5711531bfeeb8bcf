-- One chunk of staging.questionnaire_answers: one row per answer at any depth (item.item and
-- answer.item) of the current version of each QuestionnaireResponse whose key hashes into chunk
-- $chunk of $chunks. fhir_mappings/flatten.py runs this file once per chunk, after
-- create_questionnaire_answers.sql; every response falls in exactly one chunk.

-- The chunk's responses (the current version of each, as landed).
CREATE OR REPLACE TEMP TABLE response_chunk AS
SELECT response.source, response.id, response.version_id, response.resource
FROM raw.questionnaire_response AS response
JOIN current_response_versions USING (source, id, version_id)
WHERE hash(response.source || '/' || response.id) % $chunks = $chunk;

-- Items are walked with a recursive CTE; the children of an item are its own `item` list followed by
-- the `item` lists nested in its answers, so the order path stays stable whatever the nesting.
INSERT INTO staging.questionnaire_answers BY NAME
WITH RECURSIVE items_at_every_depth(source, response_id, version_id, depth, item_path, order_path, link_id, item) AS (
    SELECT response.source, response.id, response.version_id, 1,
           child.node.item ->> 'linkId',
           lpad(child.node.i::VARCHAR, 4, '0'),
           child.node.item ->> 'linkId',
           child.node.item
    FROM response_chunk AS response,
         unnest(list_transform(coalesce(from_json(response.resource -> 'item', '["JSON"]'), []),
                               lambda x, i: {'item': x, 'i': i})) AS child(node)
    UNION ALL
    SELECT parent.source, parent.response_id, parent.version_id, parent.depth + 1,
           parent.item_path || ' > ' || coalesce((child.node.item ->> 'linkId'), '?'),
           parent.order_path || '.' || lpad(child.node.i::VARCHAR, 4, '0'),
           child.node.item ->> 'linkId',
           child.node.item
    FROM items_at_every_depth AS parent,
         unnest(list_transform(
             list_concat(
                 coalesce(from_json(parent.item -> 'item', '["JSON"]'), []),
                 flatten(list_transform(coalesce(from_json(parent.item -> 'answer', '["JSON"]'), []),
                                        lambda a: coalesce(from_json(a -> 'item', '["JSON"]'), [])))),
             lambda x, i: {'item': x, 'i': i})) AS child(node)
    WHERE parent.depth < 20  -- guards against pathological nesting
),

item_answers AS (
    SELECT item.source, item.response_id, item.version_id, item.depth, item.link_id, item.item_path,
           item.order_path,
           answer.ans.i AS answer_index,
           CASE
               WHEN (answer.ans.a -> 'valueCoding') IS NOT NULL THEN 'coding'
               WHEN (answer.ans.a -> 'valueInteger') IS NOT NULL THEN 'integer'
               WHEN (answer.ans.a -> 'valueDecimal') IS NOT NULL THEN 'decimal'
               WHEN (answer.ans.a -> 'valueBoolean') IS NOT NULL THEN 'boolean'
               WHEN (answer.ans.a -> 'valueString') IS NOT NULL THEN 'string'
               WHEN (answer.ans.a -> 'valueDate') IS NOT NULL THEN 'date'
               WHEN (answer.ans.a -> 'valueDateTime') IS NOT NULL THEN 'dateTime'
               WHEN (answer.ans.a -> 'valueQuantity') IS NOT NULL THEN 'quantity'
               ELSE 'other'
           END AS answer_type,
           answer.ans.a -> 'valueCoding' ->> 'system' AS coding_system,
           answer.ans.a -> 'valueCoding' ->> 'code' AS coding_code,
           answer.ans.a -> 'valueCoding' ->> 'display' AS coding_display,
           TRY_CAST(answer.ans.a ->> 'valueInteger' AS BIGINT) AS value_integer,
           TRY_CAST(answer.ans.a ->> 'valueDecimal' AS DOUBLE) AS value_decimal,
           TRY_CAST(answer.ans.a ->> 'valueBoolean' AS BOOLEAN) AS value_boolean,
           answer.ans.a ->> 'valueString' AS value_string,
           TRY_CAST(answer.ans.a ->> 'valueDate' AS DATE) AS value_date,
           answer.ans.a ->> 'valueDateTime' AS value_datetime,
           TRY_CAST(answer.ans.a -> 'valueQuantity' ->> 'value' AS DOUBLE) AS quantity_value,
           answer.ans.a -> 'valueQuantity' ->> 'unit' AS quantity_unit
    FROM items_at_every_depth AS item,
         unnest(list_transform(coalesce(from_json(item.item -> 'answer', '["JSON"]'), []),
                               lambda x, i: {'a': x, 'i': i})) AS answer(ans)
)

-- Each answer carries its response's columns, so marts and checks read one table.
SELECT response.source, response.response_id, response.version_id, response.status,
       response.questionnaire, response.questionnaire_url, response.questionnaire_version,
       response.subject_ref, response.encounter_ref, response.source_ref, response.author_ref,
       response.authored_at,
       item_answers.* EXCLUDE (source, response_id, version_id)
FROM item_answers
JOIN staging.questionnaire_responses AS response USING (source, response_id, version_id);
