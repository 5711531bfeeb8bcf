-- The floor's second query: the naive unnest, one row per top-level item, then per answer of it
-- (answers of nested items are not reached: the least any flattening must do).
WITH responses AS (
    SELECT item
    FROM read_json($path, format = 'newline_delimited', ignore_errors = true)
),
top_level_items AS (
    SELECT unnest(item) AS it
    FROM responses
),
top_level_answers AS (
    SELECT unnest(it.answer) AS answer
    FROM top_level_items
)
SELECT count(*) AS answers
FROM top_level_answers;
