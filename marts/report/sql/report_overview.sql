-- The QI report's overview: the one row of report_overview (practice-level counts, the period covered,
-- and the min_cell the marts were suppressed with).
SELECT
    patients,
    episodes,
    sessions,
    sessions_alliance_measured,
    measurement_completion_rate,
    first_session_date,
    last_session_date,
    clinics,
    therapists_reportable,
    min_cell
FROM {{ schema }}.report_overview;
