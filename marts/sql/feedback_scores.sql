-- Feedback (marts/feedback.py): One row per outcome total (PHQ-9, GAD-7, ORS) of an attended session,
-- with its episode: the expected-response curves are fitted on the closed episodes' rows and the open
-- episodes' rows are judged against them. A session scored twice on one instrument keeps its last
-- response (by authored time), as the chart shows the last one.
WITH outcome_totals AS (
    SELECT m.source, m.episode_id, m.session_number, m.session_date, m.encounter_id, m.response_id,
           m.instrument, m.score,
           row_number() OVER (PARTITION BY m.source, m.episode_id, m.instrument, m.session_number
                              ORDER BY m.authored_at DESC, m.response_id DESC) AS newest_first
    FROM staging.session_measures m
    WHERE m.scale = 'total' AND m.instrument IN ('phq9', 'gad7', 'ors') AND m.score IS NOT NULL
)
SELECT o.source, o.episode_id, o.instrument, o.session_number, o.session_date, o.encounter_id,
       o.response_id, o.score
FROM outcome_totals o
WHERE o.newest_first = 1
ORDER BY o.source, o.episode_id, o.instrument, o.session_number;
