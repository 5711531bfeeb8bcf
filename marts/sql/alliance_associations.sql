-- The episodes behind marts.alliance_associations (built in Python, marts/associations.py: correlations,
-- Zou intervals, ICC): One row per treatment episode with its alliance by rater, outcome improvement,
-- rater discrepancy and ruptures.
SELECT episode_key, mean_alliance_patient, mean_alliance_clinician, early_alliance,
       early_alliance_clinician, phq9_baseline - phq9_last AS phq9_improvement,
       gad7_baseline - gad7_last AS gad7_improvement, ors_change, mean_rater_discrepancy,
       ruptures, ruptures_repaired, ruptures_not_repaired, ruptures_pending
FROM marts.episode_outcomes
ORDER BY episode_key;
