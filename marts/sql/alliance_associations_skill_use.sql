-- The closed episodes behind the skill-use models of marts.alliance_associations (marts/moderation.py):
-- One row per closed treatment episode with its therapist, baseline and endpoint (last paired) PHQ-9,
-- early patient-rated alliance and skill use (mean patient-rated CBTSQ total over the episode). Open
-- episodes are left out: their last score is interim, not an endpoint.
WITH skill_use AS (
    SELECT source, episode_id, avg(score) AS skill_use, count(*) AS skill_use_measures
    FROM staging.session_measures
    WHERE instrument = 'cbtsq' AND scale = 'total' AND rater = 'patient'
    GROUP BY source, episode_id
)
SELECT e.episode_key, e.therapist_key, e.phq9_baseline, e.phq9_last AS phq9_endpoint, e.early_alliance,
       s.skill_use, s.skill_use_measures
FROM marts.episode_outcomes e
JOIN skill_use s ON pseudonym('episode', s.source, s.episode_id) = e.episode_key
WHERE e.episode_closed
ORDER BY e.episode_key;
