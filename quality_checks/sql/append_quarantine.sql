-- One offending record appended to quality.quarantine (run once per record, values bound).
INSERT INTO quality.quarantine (
    run_id, quarantined_at, table_name, expectation_id, severity, source, record_key, reason, record
) VALUES (
    $run_id, $quarantined_at, $table_name, $expectation_id, $severity, $source, $record_key, $reason, $record
);
