-- What is quarantined now (the newest evaluation of each check), not how often checks appended rows.
WITH quarantined_records AS (
    SELECT DISTINCT table_name, source, record_key
    FROM quality.current_quarantine
)
SELECT count(*) AS record_count,
       md5(coalesce(string_agg(table_name || '|' || source || '|' || record_key,
                               ',' ORDER BY table_name, source, record_key), '')) AS digest
FROM quarantined_records
