-- Rows of the peer's flattened table, and how many responses have at least one row.
SELECT count(*) AS answers, count(DISTINCT response_id) AS responses_with_rows
FROM answers;
