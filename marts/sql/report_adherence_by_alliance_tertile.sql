-- marts.report_adherence_by_alliance_tertile: one row per adherence measure (PDC, MARS) x alliance
-- rater (patient, clinician) x third of that rater's alliance: the patient-periods of marts.adherence
-- with both values are ranked by alliance (ties broken by patient and period, so every third holds a
-- third of the cases) and the measure is averaged per third. Every one of the 12 rows exists even
-- without data. Counts are suppressed afterwards (all three thirds together when one is a small
-- cell) by marts.report_marts.build_report_adherence_by_alliance_tertile.
CREATE OR REPLACE TABLE marts.report_adherence_by_alliance_tertile AS
WITH period_pairs AS (
    SELECT 'pdc' AS measure, 'patient' AS rater, patient_key, period_start,
           mean_alliance_patient AS alliance, pdc AS measure_value
    FROM marts.adherence
    UNION ALL
    SELECT 'pdc', 'clinician', patient_key, period_start, mean_alliance_clinician, pdc
    FROM marts.adherence
    UNION ALL
    SELECT 'mars', 'patient', patient_key, period_start, mean_alliance_patient, mars_mean
    FROM marts.adherence
    UNION ALL
    SELECT 'mars', 'clinician', patient_key, period_start, mean_alliance_clinician, mars_mean
    FROM marts.adherence
),
ranked_pairs AS (
    SELECT *,
           row_number() OVER (PARTITION BY measure, rater ORDER BY alliance, patient_key, period_start)
               AS alliance_rank,
           count(*) OVER (PARTITION BY measure, rater) AS pairs
    FROM period_pairs
    WHERE alliance IS NOT NULL AND measure_value IS NOT NULL
),
tertiled_pairs AS (
    -- thirds as pandas.qcut cuts ranks 1..n at 1 + (n - 1) / 3 and 1 + 2 (n - 1) / 3 (right-closed),
    -- in integer arithmetic so no rounding can move a case across a cut
    SELECT *,
           CASE WHEN 3 * (alliance_rank - 1) <= pairs - 1 THEN 1
                WHEN 3 * (alliance_rank - 1) <= 2 * (pairs - 1) THEN 2
                ELSE 3 END AS tertile
    FROM ranked_pairs
),
measure_rater_tertiles AS (
    SELECT measure, rater, tertile
    FROM (VALUES ('pdc'), ('mars')) AS measures (measure)
    CROSS JOIN (VALUES ('patient'), ('clinician')) AS raters (rater)
    CROSS JOIN (VALUES (1), (2), (3)) AS tertiles (tertile)
),
per_tertile AS (
    SELECT measure_rater_tertiles.measure, measure_rater_tertiles.rater, measure_rater_tertiles.tertile,
           count(tertiled_pairs.measure_value)::INTEGER AS n_patient_periods,
           avg(tertiled_pairs.measure_value) AS mean_measure
    FROM measure_rater_tertiles
    LEFT JOIN tertiled_pairs USING (measure, rater, tertile)
    GROUP BY measure_rater_tertiles.measure, measure_rater_tertiles.rater, measure_rater_tertiles.tertile
)
SELECT per_tertile.measure,
       per_tertile.rater,
       per_tertile.tertile,
       per_tertile.n_patient_periods,
       (sum(per_tertile.n_patient_periods) OVER (PARTITION BY per_tertile.measure, per_tertile.rater))::INTEGER
           AS n_patient_periods_total,
       per_tertile.mean_measure,
       CAST(NULL AS VARCHAR) AS suppressed_columns,
       mart_params.adherence_period AS period_type,
       mart_params.pdc_threshold,
       mart_params.min_cell
FROM per_tertile
CROSS JOIN mart_params
ORDER BY per_tertile.measure DESC, per_tertile.rater DESC, per_tertile.tertile
