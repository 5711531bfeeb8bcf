-- The state of quality.check_results as a step that reads it sees it: row count and newest stamp,
-- leaving out the verdicts on the step's own output tables (written after the step; counting them
-- would make the step rebuild on every run).
SELECT count(*) AS row_count, max(checked_at)::VARCHAR AS newest
FROM quality.check_results
WHERE NOT list_contains($own_tables::VARCHAR[], table_name)
