-- Whether a table exists (optional inputs, such as the quarantine before the checks first run).
SELECT count(*) AS n
FROM information_schema.tables
WHERE table_schema = $schema AND table_name = $name;
