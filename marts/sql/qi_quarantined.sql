-- Work table _qi_quarantined: One row per scored response the newest quality checks quarantine (source
-- NULL when a check quarantines the response in every source). Read by qi_data_quality.sql.
CREATE OR REPLACE TEMP TABLE _qi_quarantined AS
SELECT source, record_key AS response_id
FROM quality.current_quarantine
WHERE table_name = 'staging.measure_scores';
