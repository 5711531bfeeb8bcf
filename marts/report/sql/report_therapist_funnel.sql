-- The QI report's funnel plot: the one row of report_therapist_funnel (the therapist_alliance period it
-- shows, the model values, the funnel's z limits and how many therapists are drawn, hidden and outside).
SELECT
    period_type,
    period_start,
    therapists_drawn,
    therapists_hidden,
    therapists_above_outer,
    therapists_below_outer,
    caseload_min,
    caseload_max,
    grand_mean,
    sigma2,
    icc,
    funnel_z_inner,
    funnel_z_outer,
    patients_min,
    patients_max,
    funnel_tau2,
    icc_ci_lower,
    icc_ci_upper
FROM {{ schema }}.report_therapist_funnel;
