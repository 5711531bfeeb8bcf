-- marts.report_therapist_funnel: one row: the therapist_alliance period the QI report's funnel plot
-- shows (the coarsest period type present, 'all' first, and its latest period) with the model
-- values shared by its rows and how many therapists are drawn, hidden, and outside the outer limits.
CREATE OR REPLACE TABLE marts.report_therapist_funnel AS
WITH shown_period AS (
    SELECT period_type, period_start, period_end
    FROM marts.therapist_alliance
    ORDER BY CASE period_type WHEN 'all' THEN 0 WHEN 'year' THEN 1 WHEN 'quarter' THEN 2 ELSE 3 END,
             period_start DESC
    LIMIT 1
),
period_therapists AS (
    SELECT therapist_alliance.*,
           NOT therapist_alliance.suppressed
               AND therapist_alliance.mean_alliance IS NOT NULL
               AND therapist_alliance.patients_with_alliance IS NOT NULL AS drawn
    FROM marts.therapist_alliance
    JOIN shown_period USING (period_type, period_start)
)
SELECT 'practice' AS level,
       any_value(shown_period.period_type) AS period_type,
       any_value(shown_period.period_start) AS period_start,
       any_value(shown_period.period_end) AS period_end,
       (count(period_therapists.therapist_key) FILTER (WHERE period_therapists.drawn))::INTEGER
           AS therapists_drawn,
       (count(period_therapists.therapist_key) FILTER (WHERE NOT period_therapists.drawn))::INTEGER
           AS therapists_hidden,
       (count(*) FILTER (WHERE period_therapists.drawn AND period_therapists.funnel_position = 'above_outer'))
           ::INTEGER AS therapists_above_outer,
       (count(*) FILTER (WHERE period_therapists.drawn AND period_therapists.funnel_position = 'below_outer'))
           ::INTEGER AS therapists_below_outer,
       min(period_therapists.caseload) FILTER (WHERE period_therapists.drawn) AS caseload_min,
       max(period_therapists.caseload) FILTER (WHERE period_therapists.drawn) AS caseload_max,
       max(period_therapists.grand_mean) AS grand_mean,
       max(period_therapists.sigma2) AS sigma2,
       max(period_therapists.icc) AS icc,
       coalesce(max(period_therapists.funnel_z_inner), any_value(mart_params.funnel_z_inner)) AS funnel_z_inner,
       coalesce(max(period_therapists.funnel_z_outer), any_value(mart_params.funnel_z_outer)) AS funnel_z_outer,
       any_value(mart_params.min_cell) AS min_cell,
       -- the chart's x axis and the mart's limits use one n: patients_with_alliance
       min(period_therapists.patients_with_alliance) FILTER (WHERE period_therapists.drawn) AS patients_min,
       max(period_therapists.patients_with_alliance) FILTER (WHERE period_therapists.drawn) AS patients_max,
       max(period_therapists.funnel_tau2) AS funnel_tau2,
       max(period_therapists.icc_ci_lower) AS icc_ci_lower,
       max(period_therapists.icc_ci_upper) AS icc_ci_upper
FROM mart_params
LEFT JOIN shown_period ON TRUE
LEFT JOIN period_therapists ON TRUE
