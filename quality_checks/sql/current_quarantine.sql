-- quality.current_quarantine: the quarantine rows written by the newest evaluation of each
-- (table, expectation), the set downstream marts anti-join on. When a later run no longer flags a
-- record, it drops out of this view (and stays in quality.quarantine).
CREATE OR REPLACE VIEW quality.current_quarantine AS
WITH newest_evaluation AS (
    SELECT table_name, expectation_id, arg_max(run_id, checked_at) AS run_id
    FROM quality.check_results
    GROUP BY table_name, expectation_id
)
SELECT quarantined.run_id, quarantined.quarantined_at, quarantined.table_name,
       quarantined.expectation_id, quarantined.severity, quarantined.source,
       quarantined.record_key, quarantined.reason, quarantined.record
FROM quality.quarantine AS quarantined
JOIN newest_evaluation USING (table_name, expectation_id, run_id);
