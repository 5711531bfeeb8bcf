-- The QI report's monthly KPI table and chart: the practice-level rows of qi_monthly, one per month,
-- oldest first, with the KPIs the report shows and the columns the marts suppressed in each row; the
-- outcome rates per calendar quarter sit on the row of the quarter's last month.
SELECT
    month,
    patients_seen,
    sessions_attended,
    measurement_completion_rate,
    mean_alliance,
    low_alliance_share,
    rupture_rate,
    episodes_ended,
    recovery_rate,
    reliable_improvement_rate,
    pdc_adherence_rate,
    attendance_rate,
    data_quality_pass_rate,
    suppressed_columns,
    quarter_start,
    quarter_recovery_rate,
    quarter_reliable_improvement_rate
FROM {{ schema }}.qi_monthly
WHERE level = 'practice'
ORDER BY month;
