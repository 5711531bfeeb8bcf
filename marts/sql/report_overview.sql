-- marts.report_overview: one row for the whole practice, the figures the QI report's overview quotes.
-- Counts are suppressed afterwards by marts.report_marts.build_report_overview (marts.suppression).
CREATE OR REPLACE TABLE marts.report_overview AS
WITH session_counts AS (
    SELECT count(DISTINCT patient_key)::INTEGER AS patients,
           count(DISTINCT episode_key)::INTEGER AS episodes,
           count(*)::INTEGER AS sessions,
           (count(*) FILTER (WHERE alliance_measured))::INTEGER AS sessions_alliance_measured,
           min(session_date) AS first_session_date,
           max(session_date) AS last_session_date
    FROM marts.alliance_sessions
),
clinic_counts AS (
    SELECT count(DISTINCT clinic_key)::INTEGER AS clinics
    FROM marts.qi_monthly
    WHERE level = 'clinic' AND clinic_key IS NOT NULL
),
reportable_therapists AS (
    -- therapists (staff, not patients) with a row that is not suppressed in any period
    SELECT count(DISTINCT therapist_key)::INTEGER AS therapists_reportable
    FROM marts.therapist_alliance
    WHERE NOT suppressed
),
practice_months AS (
    SELECT count(*)::INTEGER AS months
    FROM marts.qi_monthly
    WHERE level = 'practice'
)
SELECT 'practice' AS level,
       session_counts.patients,
       session_counts.episodes,
       session_counts.sessions,
       session_counts.sessions_alliance_measured,
       session_counts.sessions_alliance_measured / nullif(session_counts.sessions, 0)
           AS measurement_completion_rate,
       session_counts.first_session_date,
       session_counts.last_session_date,
       practice_months.months,
       clinic_counts.clinics,
       reportable_therapists.therapists_reportable,
       CAST(NULL AS VARCHAR) AS suppressed_columns,
       mart_params.min_cell
FROM session_counts
CROSS JOIN clinic_counts
CROSS JOIN reportable_therapists
CROSS JOIN practice_months
CROSS JOIN mart_params
