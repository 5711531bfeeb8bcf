-- One row per answer at any depth of a QuestionnaireResponse (item.item and answer.item), set-based.
-- Input: a relation `qr_input(source, id, version_id, resource JSON)`.
-- Items are walked with a recursive CTE; children of an item are its own `item` list followed by the
-- `item` lists nested in its answers, so the order path stays stable whatever the nesting.
WITH RECURSIVE nodes(source, response_id, version_id, depth, item_path, order_path, link_id, item) AS (
    SELECT q.source, q.id, q.version_id, 1,
           c.node.item ->> 'linkId',
           lpad(c.node.i::VARCHAR, 4, '0'),
           c.node.item ->> 'linkId',
           c.node.item
    FROM qr_input q,
         unnest(list_transform(coalesce(from_json(q.resource -> 'item', '["JSON"]'), []),
                               lambda x, i: {'item': x, 'i': i})) AS c(node)
    UNION ALL
    SELECT n.source, n.response_id, n.version_id, n.depth + 1,
           n.item_path || ' > ' || coalesce((c.node.item ->> 'linkId'), '?'),
           n.order_path || '.' || lpad(c.node.i::VARCHAR, 4, '0'),
           c.node.item ->> 'linkId',
           c.node.item
    FROM nodes n,
         unnest(list_transform(
             list_concat(
                 coalesce(from_json(n.item -> 'item', '["JSON"]'), []),
                 flatten(list_transform(coalesce(from_json(n.item -> 'answer', '["JSON"]'), []),
                                        lambda a: coalesce(from_json(a -> 'item', '["JSON"]'), [])))),
             lambda x, i: {'item': x, 'i': i})) AS c(node)
    WHERE n.depth < 20  -- guards against pathological nesting
)
SELECT n.source, n.response_id, n.version_id, n.depth, n.link_id, n.item_path, n.order_path,
       a.ans.i AS answer_index,
       CASE
           WHEN (a.ans.a -> 'valueCoding') IS NOT NULL THEN 'coding'
           WHEN (a.ans.a -> 'valueInteger') IS NOT NULL THEN 'integer'
           WHEN (a.ans.a -> 'valueDecimal') IS NOT NULL THEN 'decimal'
           WHEN (a.ans.a -> 'valueBoolean') IS NOT NULL THEN 'boolean'
           WHEN (a.ans.a -> 'valueString') IS NOT NULL THEN 'string'
           WHEN (a.ans.a -> 'valueDate') IS NOT NULL THEN 'date'
           WHEN (a.ans.a -> 'valueDateTime') IS NOT NULL THEN 'dateTime'
           WHEN (a.ans.a -> 'valueQuantity') IS NOT NULL THEN 'quantity'
           ELSE 'other'
       END AS answer_type,
       a.ans.a -> 'valueCoding' ->> 'system' AS coding_system,
       a.ans.a -> 'valueCoding' ->> 'code' AS coding_code,
       a.ans.a -> 'valueCoding' ->> 'display' AS coding_display,
       TRY_CAST(a.ans.a ->> 'valueInteger' AS BIGINT) AS value_integer,
       TRY_CAST(a.ans.a ->> 'valueDecimal' AS DOUBLE) AS value_decimal,
       TRY_CAST(a.ans.a ->> 'valueBoolean' AS BOOLEAN) AS value_boolean,
       a.ans.a ->> 'valueString' AS value_string,
       TRY_CAST(a.ans.a ->> 'valueDate' AS DATE) AS value_date,
       a.ans.a ->> 'valueDateTime' AS value_datetime,
       TRY_CAST(a.ans.a -> 'valueQuantity' ->> 'value' AS DOUBLE) AS quantity_value,
       a.ans.a -> 'valueQuantity' ->> 'unit' AS quantity_unit
FROM nodes n,
     unnest(list_transform(coalesce(from_json(n.item -> 'answer', '["JSON"]'), []),
                           lambda x, i: {'a': x, 'i': i})) AS a(ans)
