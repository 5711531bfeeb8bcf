-- The state of an append-only table: its row count and newest append stamp.
SELECT count(*) AS row_count, max({{ stamp }})::VARCHAR AS newest
FROM {{ table }}
