-- marts.report_early_alliance_fit: one row for the whole practice: the episodes that have an early
-- patient-rated alliance and a baseline and last PHQ-9 score, and the least-squares line of PHQ-9
-- improvement on early alliance. Fewer than min_cell such episodes: count and line suppressed.
CREATE OR REPLACE TABLE marts.report_early_alliance_fit AS
WITH episode_pairs AS (
    SELECT early_alliance, phq9_baseline - phq9_last AS phq9_improvement
    FROM marts.episode_outcomes
    WHERE early_alliance IS NOT NULL AND phq9_baseline IS NOT NULL AND phq9_last IS NOT NULL
),
least_squares AS (
    SELECT count(*)::INTEGER AS episodes,
           regr_intercept(phq9_improvement, early_alliance) AS intercept,
           regr_slope(phq9_improvement, early_alliance) AS slope
    FROM episode_pairs
),
fit_with_suppression AS (
    SELECT least_squares.*,
           least_squares.episodes BETWEEN 1 AND mart_params.min_cell - 1 AS suppressed,
           mart_params.early_sessions,
           mart_params.min_cell
    FROM least_squares
    CROSS JOIN mart_params
)
SELECT 'practice' AS level,
       CASE WHEN NOT suppressed THEN episodes END AS episodes,
       CASE WHEN NOT suppressed THEN intercept END AS intercept,
       CASE WHEN NOT suppressed THEN slope END AS slope,
       suppressed,
       early_sessions,
       min_cell
FROM fit_with_suppression
