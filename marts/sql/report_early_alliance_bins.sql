-- marts.report_early_alliance_bins: one row per half-point band of early patient-rated alliance (1-1.5,
-- ..., 4.5-5; the QI report's early alliance vs PHQ-9 chart), with the episodes in the band and their
-- mean PHQ-9 improvement (baseline minus last). Episodes as report_early_alliance_fit selects them. The
-- chart draws bands, never single episodes; build_report_early_alliance_bins then suppresses small bands
-- with complements (the bands add up to the fit's episodes, which are published).
CREATE OR REPLACE TABLE marts.report_early_alliance_bins AS
WITH episode_pairs AS (
    SELECT early_alliance, phq9_baseline - phq9_last AS phq9_improvement
    FROM marts.episode_outcomes
    WHERE early_alliance IS NOT NULL AND phq9_baseline IS NOT NULL AND phq9_last IS NOT NULL
),
banded AS (
    -- the top band is closed (5.0 belongs to 4.5-5); anything below 1 joins the lowest band
    SELECT greatest(0, least(7, floor((early_alliance - 1) / 0.5)))::INTEGER AS band, phq9_improvement
    FROM episode_pairs
),
bands AS (
    SELECT range::INTEGER AS band,
           (1 + 0.5 * range)::DOUBLE AS band_lower,
           (1.5 + 0.5 * range)::DOUBLE AS band_upper
    FROM range(8)
)
SELECT 'band' AS level,
       bands.band,
       bands.band_lower,
       bands.band_upper,
       count(banded.band)::INTEGER AS episodes,
       avg(banded.phq9_improvement) AS mean_phq9_improvement,
       NULL::VARCHAR AS suppressed_columns,
       any_value(mart_params.early_sessions) AS early_sessions,
       any_value(mart_params.min_cell) AS min_cell
FROM bands
CROSS JOIN mart_params
LEFT JOIN banded ON banded.band = bands.band
GROUP BY bands.band, bands.band_lower, bands.band_upper
ORDER BY bands.band
