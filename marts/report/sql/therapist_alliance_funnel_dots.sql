-- The dots of the funnel plot: the therapists of therapist_alliance in the period the funnel shows
-- ($period_type, $period_start from report_therapist_funnel) that are not suppressed and have a mean
-- alliance and a shown patients_with_alliance (the n of the mart's funnel limits, and the chart's x;
-- the caseload may be hidden as a complement), one row each, in pseudonym order.
SELECT therapist_key, caseload, patients_with_alliance, mean_alliance, shrunken_alliance, funnel_position
FROM {{ schema }}.therapist_alliance
WHERE period_type = $period_type
  AND period_start = $period_start
  AND NOT suppressed
  AND mean_alliance IS NOT NULL
  AND patients_with_alliance IS NOT NULL
ORDER BY therapist_key;
