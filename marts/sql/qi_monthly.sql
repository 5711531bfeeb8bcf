-- The counts behind marts.qi_monthly: One row per clinic x month, plus one practice-wide row per month
-- (GROUPING SETS), before suppression and rates (marts/qi.py adds those and writes the mart).
-- Every count is attributed to exactly one clinic, so the practice row is the sum of the month's
-- clinic rows; sessions with no known clinic form a row with a NULL clinic_key.
-- Needs the work tables _qi_patient_months, _qi_pdc, _placed_appointments and _qi_dq, mart_params and
-- the pseudonym() function.
WITH session_counts AS (   -- from the session mart, by the session's clinic
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, session_month AS month,
           count(*) AS sessions_attended,
           count(*) FILTER (WHERE alliance_measured) AS sessions_alliance_measured,
           count(wai_sr_mean) AS sessions_wai_measured,
           avg(wai_sr_mean) AS mean_alliance,
           count(*) FILTER (WHERE low_alliance_flag) AS sessions_low_alliance,
           count(srs_total) AS sessions_srs_measured,
           avg(srs_total) AS mean_srs,
           count(wai_clinician_mean) AS sessions_clinician_measured,
           avg(wai_clinician_mean) AS mean_alliance_clinician,
           count(*) FILTER (WHERE rupture_flag) AS ruptures
    FROM marts.alliance_sessions
    GROUP BY GROUPING SETS ((clinic_key, session_month), (session_month))
),

patient_counts AS (   -- patients seen, by the clinic of their last session in the month; their PDC
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, month,
           count(*) AS patients_seen,
           count(q.pdc) AS patients_pdc_measured,
           count(*) FILTER (WHERE q.adherent) AS patients_pdc_adherent
    FROM (SELECT pm.*, pseudonym('organization', pm.source, pm.clinic_id) AS clinic_key
          FROM _qi_patient_months pm) p
    LEFT JOIN _qi_pdc q USING (period_id)
    GROUP BY GROUPING SETS ((clinic_key, month), (month))
),

episode_counts AS (   -- episodes by their clinic, in the month they ended
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, end_month AS month,
           count(*) AS episodes_ended,
           count(*) FILTER (WHERE outcome_complete) AS episodes_outcome_complete,
           count(*) FILTER (WHERE outcome_complete AND case_at_start) AS episodes_case_complete,
           count(*) FILTER (WHERE recovery) AS episodes_recovered,
           count(*) FILTER (WHERE reliable_improvement) AS episodes_reliably_improved
    FROM marts.episode_outcomes
    WHERE episode_closed AND end_month IS NOT NULL
    GROUP BY GROUPING SETS ((clinic_key, end_month), (end_month))
),

appointment_counts AS (   -- appointments by their episode's clinic
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, month,
           count(*) AS appointments_booked,
           count(*) FILTER (WHERE kind = 'attended') AS appointments_attended
    FROM (SELECT pseudonym('organization', source, clinic_id) AS clinic_key,
                 date_trunc('month', start_date)::DATE AS month, kind
          FROM _placed_appointments)
    GROUP BY GROUPING SETS ((clinic_key, month), (month))
),

data_quality_counts AS (   -- responses by their session's clinic
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, month,
           count(*) AS dq_responses, count(*) FILTER (WHERE passed) AS dq_passed
    FROM _qi_dq
    GROUP BY GROUPING SETS ((clinic_key, month), (month))
),

row_keys AS (   -- every (level, clinic, month) with any count
    SELECT practice, clinic_key, month FROM session_counts
    UNION SELECT practice, clinic_key, month FROM patient_counts
    UNION SELECT practice, clinic_key, month FROM episode_counts
    UNION SELECT practice, clinic_key, month FROM appointment_counts
    UNION SELECT practice, clinic_key, month FROM data_quality_counts
)

SELECT CASE WHEN k.practice THEN 'practice' ELSE 'clinic' END AS level, k.clinic_key, k.month,
       ses.* EXCLUDE (practice, clinic_key, month), pat.* EXCLUDE (practice, clinic_key, month),
       eps.* EXCLUDE (practice, clinic_key, month), appt.* EXCLUDE (practice, clinic_key, month),
       dq.* EXCLUDE (practice, clinic_key, month),
       t.wai_sr_low_alliance_mean AS low_alliance_threshold, t.pdc_threshold, t.pdc_window_days, t.min_cell
FROM row_keys k
CROSS JOIN mart_params t
LEFT JOIN session_counts ses
       ON ses.practice = k.practice AND ses.clinic_key IS NOT DISTINCT FROM k.clinic_key
      AND ses.month = k.month
LEFT JOIN patient_counts pat
       ON pat.practice = k.practice AND pat.clinic_key IS NOT DISTINCT FROM k.clinic_key
      AND pat.month = k.month
LEFT JOIN episode_counts eps
       ON eps.practice = k.practice AND eps.clinic_key IS NOT DISTINCT FROM k.clinic_key
      AND eps.month = k.month
LEFT JOIN appointment_counts appt
       ON appt.practice = k.practice AND appt.clinic_key IS NOT DISTINCT FROM k.clinic_key
      AND appt.month = k.month
LEFT JOIN data_quality_counts dq
       ON dq.practice = k.practice AND dq.clinic_key IS NOT DISTINCT FROM k.clinic_key
      AND dq.month = k.month
WHERE k.month IS NOT NULL
ORDER BY k.month, k.practice, k.clinic_key NULLS LAST;
