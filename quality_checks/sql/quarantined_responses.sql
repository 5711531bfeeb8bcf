-- quality.quarantined_responses: one row per (source, response_id) in the current quarantine of
-- staging.measure_scores, with every check and reason, for marts that prefer a ready key list.
CREATE OR REPLACE VIEW quality.quarantined_responses AS
SELECT source,
       record_key AS response_id,
       string_agg(DISTINCT expectation_id, ', ' ORDER BY expectation_id) AS expectations,
       string_agg(DISTINCT reason, '; ' ORDER BY reason) AS reasons
FROM quality.current_quarantine
WHERE table_name = 'staging.measure_scores'
GROUP BY source, record_key;
