-- Feedback (marts/feedback.py): One row per session of marts.alliance_sessions that can raise an
-- alliance alert: a rupture (a reliable drop, with its repair status) or a low patient-rated alliance.
-- The rupture and low-alliance definitions are the session mart's, not repeated here.
SELECT a.episode_key, a.session_number, a.session_date, a.rupture_flag, a.repair_status,
       a.low_alliance_flag, a.wai_sr_mean, a.srs_total
FROM marts.alliance_sessions a
WHERE coalesce(a.rupture_flag, FALSE) OR coalesce(a.low_alliance_flag, FALSE)
ORDER BY a.episode_key, a.session_number;
