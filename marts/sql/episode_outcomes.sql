-- marts.episode_outcomes: One row per treatment episode: baseline and last PHQ-9, GAD-7 and ORS,
-- change, reliable improvement and deterioration, recovery and reliable recovery (NHS Talking
-- Therapies), PHQ-9 response and remission, early and mean alliance by rater, ruptures, attendance and
-- dropout. A baseline is the first score within the baseline window (sessions 1..baseline_window_sessions,
-- or baseline_window_days from the episode start); without one the measure has no pair and the outcome
-- is incomplete (never a baseline from a later session, which would understate change). Thresholds come from mart_params (registry + settings) and are copied beside each row.
-- Needs marts.alliance_sessions, the work table _episode_appointments and the pseudonym() function.
CREATE OR REPLACE TABLE marts.episode_outcomes AS
WITH outcome_measurements AS (   -- every outcome total, flagged when it falls in the baseline window
    SELECT m.source, m.episode_id, m.instrument, m.session_number, m.score,
           CASE WHEN t.baseline_window_days IS NOT NULL
                THEN m.session_date - te.period_start <= t.baseline_window_days
                ELSE m.session_number <= t.baseline_window_sessions END AS in_baseline_window
    FROM staging.session_measures m
    CROSS JOIN mart_params t
    LEFT JOIN staging.treatment_episodes te ON te.source = m.source AND te.episode_id = m.episode_id
    WHERE m.scale = 'total' AND m.instrument IN ('phq9', 'gad7', 'ors')
),

instrument_totals AS (   -- per episode x outcome measure: baseline (in the window only), last, how many
    SELECT source, episode_id, instrument,
           arg_min(score, session_number) FILTER (WHERE in_baseline_window) AS baseline,
           min(session_number) FILTER (WHERE in_baseline_window) AS baseline_session,
           arg_max(score, session_number) AS latest_score,
           max(session_number) AS latest_session,
           count(*) AS n
    FROM outcome_measurements
    GROUP BY source, episode_id, instrument
),

outcome_scores AS (   -- one row per episode: baseline and last score of each outcome measure
    -- the last score must come from a session after the baseline's; no baseline, no last (unpaired)
    SELECT source, episode_id,
        max(baseline) FILTER (WHERE instrument = 'phq9') AS phq9_baseline,
        max(latest_score) FILTER (WHERE instrument = 'phq9' AND latest_session > baseline_session)
            AS phq9_last,
        max(baseline_session) FILTER (WHERE instrument = 'phq9') AS phq9_baseline_session,
        coalesce(max(n) FILTER (WHERE instrument = 'phq9'), 0) AS phq9_n,
        max(baseline) FILTER (WHERE instrument = 'gad7') AS gad7_baseline,
        max(latest_score) FILTER (WHERE instrument = 'gad7' AND latest_session > baseline_session)
            AS gad7_last,
        max(baseline_session) FILTER (WHERE instrument = 'gad7') AS gad7_baseline_session,
        coalesce(max(n) FILTER (WHERE instrument = 'gad7'), 0) AS gad7_n,
        max(baseline) FILTER (WHERE instrument = 'ors') AS ors_baseline,
        max(latest_score) FILTER (WHERE instrument = 'ors' AND latest_session > baseline_session)
            AS ors_last,
        coalesce(max(n) FILTER (WHERE instrument = 'ors'), 0) AS ors_n
    FROM instrument_totals
    GROUP BY source, episode_id
),

episode_alliance AS (   -- early (sessions 1..early_sessions) and mean alliance by rater
    SELECT m.source, m.episode_id,
        avg(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'mean'
                           AND session_number <= t.early_sessions) AS early_alliance,
        count(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'mean'
                             AND session_number <= t.early_sessions) AS early_alliance_sessions,
        avg(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'mean'
                           AND session_number <= t.early_sessions) AS early_alliance_clinician,
        avg(score) FILTER (WHERE instrument = 'srs' AND rater = 'patient' AND scale = 'total'
                           AND session_number <= t.early_sessions) AS early_srs,
        avg(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'mean')
            AS mean_alliance_patient,
        count(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'mean')
            AS alliance_sessions_patient,
        avg(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'mean')
            AS mean_alliance_clinician,
        count(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'mean')
            AS alliance_sessions_clinician,
        avg(score) FILTER (WHERE instrument = 'srs' AND rater = 'patient' AND scale = 'total') AS mean_srs
    FROM staging.session_measures m
    CROSS JOIN mart_params t
    GROUP BY m.source, m.episode_id
),

episodes_keyed AS (
    SELECT te.*, pseudonym('episode', te.source, te.episode_id) AS episode_key
    FROM staging.treatment_episodes te
),

episode_ruptures AS (   -- from the session mart: ruptures and their repair
    SELECT episode_key,
           avg(rater_discrepancy) AS mean_rater_discrepancy,
           count(*) FILTER (WHERE rupture_flag) AS ruptures,
           count(*) FILTER (WHERE repair_status = 'repaired') AS ruptures_repaired,
           count(*) FILTER (WHERE repair_status = 'not_repaired') AS ruptures_not_repaired,
           count(*) FILTER (WHERE repair_status = 'pending') AS ruptures_pending
    FROM marts.alliance_sessions
    GROUP BY episode_key
),

episodes_joined AS (   -- every episode with its scores, alliance, ruptures and appointments
    SELECT ep.*, p.* EXCLUDE (source, episode_id), al.* EXCLUDE (source, episode_id),
           rup.* EXCLUDE (episode_key), ap.* EXCLUDE (source, episode_id),
           -- every measure given in the episode has a baseline in the window and a later paired score,
           -- and at least one measure does
           (coalesce(p.phq9_n, 0) = 0 OR p.phq9_last IS NOT NULL)
               AND (coalesce(p.gad7_n, 0) = 0 OR p.gad7_last IS NOT NULL)
               AND (p.phq9_last IS NOT NULL OR p.gad7_last IS NOT NULL) AS outcome_complete,
           (coalesce(p.phq9_n, 0) > 0 AND p.phq9_baseline IS NULL)
               OR (coalesce(p.gad7_n, 0) > 0 AND p.gad7_baseline IS NULL) AS baseline_outside_window,
           p.phq9_baseline - p.phq9_last >= t.phq9_reliable_change AS phq9_ri,
           p.phq9_last - p.phq9_baseline >= t.phq9_reliable_change AS phq9_rd,
           p.gad7_baseline - p.gad7_last >= t.gad7_reliable_change AS gad7_ri,
           p.gad7_last - p.gad7_baseline >= t.gad7_reliable_change AS gad7_rd,
           CASE WHEN p.phq9_baseline IS NULL AND p.gad7_baseline IS NULL THEN NULL
                ELSE coalesce(p.phq9_baseline >= t.phq9_caseness, FALSE)
                     OR coalesce(p.gad7_baseline >= t.gad7_caseness, FALSE) END AS case_at_start
    FROM episodes_keyed ep
    CROSS JOIN mart_params t
    LEFT JOIN outcome_scores p ON p.source = ep.source AND p.episode_id = ep.episode_id
    LEFT JOIN episode_alliance al ON al.source = ep.source AND al.episode_id = ep.episode_id
    LEFT JOIN episode_ruptures rup ON rup.episode_key = ep.episode_key
    LEFT JOIN _episode_appointments ap ON ap.source = ep.source AND ap.episode_id = ep.episode_id
),

episodes_flagged AS (   -- reliable change, recovery and unplanned ending
    SELECT b.*,
        CASE WHEN b.outcome_complete THEN
            (coalesce(b.phq9_ri, FALSE) OR coalesce(b.gad7_ri, FALSE))
            AND NOT (coalesce(b.phq9_rd, FALSE) OR coalesce(b.gad7_rd, FALSE)) END AS reliable_improvement,
        CASE WHEN b.outcome_complete THEN
            (coalesce(b.phq9_rd, FALSE) OR coalesce(b.gad7_rd, FALSE))
            AND NOT (coalesce(b.phq9_ri, FALSE) OR coalesce(b.gad7_ri, FALSE)) END AS reliable_deterioration,
        CASE WHEN b.outcome_complete AND b.case_at_start THEN
            NOT (coalesce(b.phq9_last >= t.phq9_caseness, FALSE)
                 OR coalesce(b.gad7_last >= t.gad7_caseness, FALSE))
            END AS recovery,
        -- an unplanned ending: the EpisodeOfCare was cancelled, or its last booked appointment was
        -- missed (no-show or cancelled). NULL when closed with neither known (no appointments booked).
        CASE WHEN b.closed THEN
            CASE WHEN b.status = 'cancelled' THEN TRUE
                 WHEN coalesce(b.appointments_booked, 0) > 0 THEN b.last_appointment_kind = 'missed'
            END
        END AS unplanned_ending
    FROM episodes_joined b
    CROSS JOIN mart_params t
)

SELECT
    f.episode_key,
    pseudonym('patient', f.source, f.patient_id) AS patient_key,
    pseudonym('practitioner', f.source, f.practitioner_id) AS therapist_key,
    pseudonym('organization', f.source, f.clinic_id) AS clinic_key,
    f.episode_basis, f.status AS episode_status, f.closed AS episode_closed,
    f.period_start AS start_date,
    CASE WHEN f.closed THEN coalesce(f.period_end, f.last_session_date) END AS end_date,
    date_trunc('month', f.period_start)::DATE AS start_month,
    date_trunc('month', CASE WHEN f.closed THEN coalesce(f.period_end, f.last_session_date) END)::DATE
        AS end_month,
    f.age_band_at_start,
    pt.gender,
    f.sessions_attended, f.first_session_date, f.last_session_date,
    coalesce(f.appointments_booked, 0)::INTEGER AS appointments_booked,
    coalesce(f.appointments_attended, 0)::INTEGER AS appointments_attended,
    coalesce(f.appointments_noshow, 0)::INTEGER AS appointments_noshow,
    coalesce(f.appointments_cancelled, 0)::INTEGER AS appointments_cancelled,
    CASE WHEN f.appointments_booked > 0 THEN f.appointments_attended / f.appointments_booked END
        AS attendance_rate,
    f.unplanned_ending,
    -- dropout = an unplanned ending, however many sessions came before it (a short planned treatment
    -- is not a dropout)
    f.unplanned_ending AS dropout,
    f.phq9_baseline, f.phq9_last, f.phq9_last - f.phq9_baseline AS phq9_change, f.phq9_n::INTEGER AS phq9_n,
    f.gad7_baseline, f.gad7_last, f.gad7_last - f.gad7_baseline AS gad7_change, f.gad7_n::INTEGER AS gad7_n,
    f.ors_baseline, f.ors_last, f.ors_last - f.ors_baseline AS ors_change, f.ors_n::INTEGER AS ors_n,
    f.phq9_baseline_session::INTEGER AS phq9_baseline_session,
    f.gad7_baseline_session::INTEGER AS gad7_baseline_session,
    f.baseline_outside_window,
    f.case_at_start,
    f.outcome_complete,
    f.phq9_ri AS phq9_reliable_improvement, f.phq9_rd AS phq9_reliable_deterioration,
    f.gad7_ri AS gad7_reliable_improvement, f.gad7_rd AS gad7_reliable_deterioration,
    f.reliable_improvement, f.reliable_deterioration,
    f.recovery,
    f.recovery AND f.reliable_improvement AS reliable_recovery,
    CASE WHEN f.phq9_baseline >= t.phq9_caseness AND f.phq9_last IS NOT NULL
         THEN f.phq9_baseline - f.phq9_last >= t.phq9_response_drop_fraction * f.phq9_baseline END
        AS phq9_response,
    CASE WHEN f.phq9_baseline >= t.phq9_caseness AND f.phq9_last IS NOT NULL
         THEN f.phq9_last < t.phq9_remission_below END AS phq9_remission,
    f.ors_last - f.ors_baseline >= t.ors_reliable_change AS ors_reliable_improvement,
    f.ors_baseline - f.ors_last >= t.ors_reliable_change AS ors_reliable_deterioration,
    CASE WHEN f.ors_last IS NOT NULL
         THEN f.ors_baseline < t.ors_clinical_cutoff AND f.ors_last >= t.ors_clinical_cutoff
              AND f.ors_last - f.ors_baseline >= t.ors_reliable_change END
        AS ors_clinically_significant_improvement,
    f.early_alliance, coalesce(f.early_alliance_sessions, 0)::INTEGER AS early_alliance_sessions,
    f.early_alliance_clinician, f.early_srs,
    f.mean_alliance_patient, coalesce(f.alliance_sessions_patient, 0)::INTEGER AS alliance_sessions_patient,
    f.mean_alliance_clinician,
    coalesce(f.alliance_sessions_clinician, 0)::INTEGER AS alliance_sessions_clinician,
    f.mean_srs, f.mean_rater_discrepancy,
    coalesce(f.ruptures, 0)::INTEGER AS ruptures,
    coalesce(f.ruptures_repaired, 0)::INTEGER AS ruptures_repaired,
    coalesce(f.ruptures_not_repaired, 0)::INTEGER AS ruptures_not_repaired,
    coalesce(f.ruptures_pending, 0)::INTEGER AS ruptures_pending,
    t.phq9_caseness, t.gad7_caseness, t.phq9_reliable_change, t.gad7_reliable_change,
    t.phq9_response_drop_fraction, t.phq9_remission_below,
    t.ors_reliable_change, t.ors_clinical_cutoff,
    t.early_sessions::INTEGER AS early_sessions,
    t.baseline_window_sessions::INTEGER AS baseline_window_sessions,
    t.baseline_window_days::INTEGER AS baseline_window_days
FROM episodes_flagged f
CROSS JOIN mart_params t
LEFT JOIN staging.patients pt ON pt.source = f.source AND pt.patient_id = f.patient_id
ORDER BY f.episode_key;
