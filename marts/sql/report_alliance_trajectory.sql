-- marts.report_alliance_trajectory: one row per session number of a treatment episode (level
-- 'session'), plus one row over all sessions (level 'all', session_number NULL): how many sessions
-- were rated by the patient and by the clinician, and the mean alliance with its normal interval.
-- Counts are suppressed afterwards by marts.report_marts.build_report_alliance_trajectory.
CREATE OR REPLACE TABLE marts.report_alliance_trajectory AS
WITH rated_sessions AS (
    SELECT session_number, wai_sr_mean, wai_clinician_mean
    FROM marts.alliance_sessions
),
by_session_number AS (
    SELECT 'session' AS level,
           session_number,
           count(wai_sr_mean)::INTEGER AS sessions_patient_rated,
           avg(wai_sr_mean) AS mean_alliance_patient,
           stddev_samp(wai_sr_mean) AS sd_alliance_patient,
           count(wai_clinician_mean)::INTEGER AS sessions_clinician_rated,
           avg(wai_clinician_mean) AS mean_alliance_clinician
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
           avg(wai_clinician_mean) AS mean_alliance_clinician
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
       mart_params.min_cell
FROM trajectory
CROSS JOIN mart_params
ORDER BY trajectory.level DESC, trajectory.session_number
