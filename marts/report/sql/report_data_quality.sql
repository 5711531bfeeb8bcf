-- The QI report's data-quality section: the rows of report_data_quality, one per table and severity
-- (level 'table', by table and severity) first, then the total over all tables (level 'all').
SELECT
    level,
    table_name,
    severity,
    run_id,
    checks_run,
    passed,
    failed,
    skipped,
    quarantined_rows,
    pass_rate
FROM {{ schema }}.report_data_quality
ORDER BY level DESC, table_name, severity;
