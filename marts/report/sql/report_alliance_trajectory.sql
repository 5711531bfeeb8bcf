-- The QI report's alliance trajectories: the rows of report_alliance_trajectory, the per-session-number
-- rows (level 'session', by session number) first, then the one row over all sessions (level 'all').
SELECT
    level,
    session_number,
    sessions_patient_rated,
    mean_alliance_patient,
    ci_lower_patient,
    ci_upper_patient,
    sessions_clinician_rated,
    mean_alliance_clinician,
    low_alliance_threshold,
    sessions_change_patient,
    mean_change_patient,
    ci_lower_change_patient,
    ci_upper_change_patient,
    sessions_change_clinician,
    mean_change_clinician
FROM {{ schema }}.report_alliance_trajectory
ORDER BY level DESC, session_number;
