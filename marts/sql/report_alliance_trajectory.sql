-- marts.report_alliance_trajectory: one row per session number of a treatment episode (level
-- 'session'), plus one row over all sessions (level 'all', session_number NULL): how many sessions
-- were rated by the patient and by the clinician, and the mean alliance with its normal interval; and
-- the within-episode change: each rated session's score minus the same episode's session-1 score (by
-- rater), averaged per session number over the episodes rated at both, so the line follows the same
-- episodes instead of mixing in who is still in treatment (the cross-sectional mean rises partly
-- because episodes with a weaker alliance end sooner).
-- Counts are suppressed afterwards by marts.report_marts.build_report_alliance_trajectory.
CREATE OR REPLACE TABLE marts.report_alliance_trajectory AS
WITH session_one AS (   -- each episode's session-1 rating by rater (the baseline of the change)
    SELECT episode_key,
           any_value(wai_sr_mean) FILTER (WHERE session_number = 1) AS first_patient,
           any_value(wai_clinician_mean) FILTER (WHERE session_number = 1) AS first_clinician
    FROM marts.alliance_sessions
    GROUP BY episode_key
),
rated_sessions AS (
    SELECT s.session_number, s.wai_sr_mean, s.wai_clinician_mean,
           s.wai_sr_mean - o.first_patient AS change_patient,
           s.wai_clinician_mean - o.first_clinician AS change_clinician
    FROM marts.alliance_sessions s
    LEFT JOIN session_one o USING (episode_key)
),
by_session_number AS (
    SELECT 'session' AS level,
           session_number,
           count(wai_sr_mean)::INTEGER AS sessions_patient_rated,
           avg(wai_sr_mean) AS mean_alliance_patient,
           stddev_samp(wai_sr_mean) AS sd_alliance_patient,
           count(wai_clinician_mean)::INTEGER AS sessions_clinician_rated,
           avg(wai_clinician_mean) AS mean_alliance_clinician,
           count(change_patient)::INTEGER AS sessions_change_patient,
           avg(change_patient) AS mean_change_patient,
           stddev_samp(change_patient) AS sd_change_patient,
           count(change_clinician)::INTEGER AS sessions_change_clinician,
           avg(change_clinician) AS mean_change_clinician
    FROM rated_sessions
    GROUP BY session_number
),
all_sessions AS (
    SELECT 'all' AS level,
           CAST(NULL AS INTEGER) AS session_number,
           count(wai_sr_mean)::INTEGER AS sessions_patient_rated,
           avg(wai_sr_mean) AS mean_alliance_patient,
           stddev_samp(wai_sr_mean) AS sd_alliance_patient,
           count(wai_clinician_mean)::INTEGER AS sessions_clinician_rated,
           avg(wai_clinician_mean) AS mean_alliance_clinician,
           count(change_patient)::INTEGER AS sessions_change_patient,
           avg(change_patient) AS mean_change_patient,
           stddev_samp(change_patient) AS sd_change_patient,
           count(change_clinician)::INTEGER AS sessions_change_clinician,
           avg(change_clinician) AS mean_change_clinician
    FROM rated_sessions
),
trajectory AS (
    SELECT * FROM by_session_number
    UNION ALL
    SELECT * FROM all_sessions
)
SELECT trajectory.level,
       trajectory.session_number,
       trajectory.sessions_patient_rated,
       trajectory.mean_alliance_patient,
       trajectory.sd_alliance_patient,
       trajectory.mean_alliance_patient
           - mart_params.ci_z * trajectory.sd_alliance_patient / sqrt(trajectory.sessions_patient_rated)
           AS ci_lower_patient,
       trajectory.mean_alliance_patient
           + mart_params.ci_z * trajectory.sd_alliance_patient / sqrt(trajectory.sessions_patient_rated)
           AS ci_upper_patient,
       trajectory.sessions_clinician_rated,
       trajectory.mean_alliance_clinician,
       CAST(NULL AS VARCHAR) AS suppressed_columns,
       mart_params.wai_sr_low_alliance_mean AS low_alliance_threshold,
       mart_params.ci_level,
       mart_params.min_cell,
       trajectory.sessions_change_patient,
       trajectory.mean_change_patient,
       trajectory.sd_change_patient,
       trajectory.mean_change_patient
           - mart_params.ci_z * trajectory.sd_change_patient / sqrt(trajectory.sessions_change_patient)
           AS ci_lower_change_patient,
       trajectory.mean_change_patient
           + mart_params.ci_z * trajectory.sd_change_patient / sqrt(trajectory.sessions_change_patient)
           AS ci_upper_change_patient,
       trajectory.sessions_change_clinician,
       trajectory.mean_change_clinician
FROM trajectory
CROSS JOIN mart_params
ORDER BY trajectory.level DESC, trajectory.session_number
