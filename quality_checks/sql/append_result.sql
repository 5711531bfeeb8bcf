-- One check result appended to quality.check_results (never updates an earlier row).
INSERT INTO quality.check_results (
    run_id, checked_at, suite, table_name, expectation_id, expectation, severity, success,
    element_count, unexpected_count, unexpected_percent, sample_keys, details, outcome, quarantined
) VALUES (
    $run_id, $checked_at, $suite, $table_name, $expectation_id, $expectation, $severity, $success,
    $element_count, $unexpected_count, $unexpected_percent, $sample_keys, $details, $outcome, $quarantined
);
