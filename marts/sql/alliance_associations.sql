-- The episodes behind marts.alliance_associations (built in Python, marts/associations.py: correlations
-- with therapist-clustered bootstrap intervals, baseline-adjusted partial correlations, ICC): One row per
-- treatment episode with its therapist, whether it has ended, alliance by rater, outcome baselines and
-- improvement, rater discrepancy and ruptures. Outcome questions use the closed episodes only (an open
-- episode's last score is interim).
SELECT episode_key, mean_alliance_patient, mean_alliance_clinician, early_alliance,
       early_alliance_clinician, phq9_baseline - phq9_last AS phq9_improvement,
       gad7_baseline - gad7_last AS gad7_improvement, ors_change, mean_rater_discrepancy,
       ruptures, ruptures_repaired, ruptures_not_repaired, ruptures_pending,
       therapist_key, episode_closed, phq9_baseline, gad7_baseline, ors_baseline
FROM marts.episode_outcomes
ORDER BY episode_key;
