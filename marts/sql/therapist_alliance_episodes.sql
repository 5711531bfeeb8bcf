-- The episodes behind the outcome rates of marts.therapist_alliance: One row per closed treatment episode
-- with a known therapist, with its end date and outcome flags.
SELECT therapist_key, end_date, outcome_complete, case_at_start, recovery, reliable_improvement, dropout
FROM marts.episode_outcomes
WHERE episode_closed AND therapist_key IS NOT NULL
ORDER BY episode_key;
