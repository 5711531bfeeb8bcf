-- Responses the data-quality checks quarantine: One row per quarantined response of a source. Their
-- scores are not written back (a score the pipeline does not trust must not reach the chart).
SELECT DISTINCT q.record_key AS response_id
FROM quality.current_quarantine q
WHERE q.table_name = 'staging.measure_scores' AND q.source = $source;
