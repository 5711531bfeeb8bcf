-- The tables the staging schema holds so far.
SELECT table_name
FROM information_schema.tables
WHERE table_schema = 'staging';
