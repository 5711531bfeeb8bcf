-- The QI report's adherence bars: the rows of report_adherence_by_alliance_tertile, one per measure
-- (pdc, mars), rater and third of alliance, with the counts behind each bar and the shared settings.
SELECT
    measure,
    rater,
    tertile,
    n_patient_periods,
    n_patient_periods_total,
    mean_measure,
    period_type,
    pdc_threshold
FROM {{ schema }}.report_adherence_by_alliance_tertile
ORDER BY measure, rater, tertile;
