-- The dots of the early alliance vs PHQ-9 scatter plot: one per episode of episode_outcomes with an early
-- alliance, a baseline and a last PHQ-9 (the episodes report_early_alliance_fit fits), x = early
-- alliance, y = PHQ-9 improvement (baseline minus last), in episode order.
SELECT early_alliance AS x, phq9_baseline - phq9_last AS y
FROM {{ schema }}.episode_outcomes
WHERE early_alliance IS NOT NULL AND phq9_baseline IS NOT NULL AND phq9_last IS NOT NULL
ORDER BY episode_key;
