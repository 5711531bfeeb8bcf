-- Work table _prospective_windows: One row per treatment episode with a patient- or clinician-rated WAI
-- at its early sessions (1..early_sessions): the early alliance by rater, the episode's therapist, and
-- the adherence window that follows it, from the day after the last early session for $window_days days
-- (cut at the reference date). "Does alliance predict adherence" is then asked prospectively: the
-- alliance is measured before any day of the adherence it is compared with. The window has the columns
-- compute_pdc needs (source, patient_id, period_id, period_start, period_end). Needs mart_params and the
-- pseudonym() function.
CREATE OR REPLACE TEMP TABLE _prospective_windows AS
WITH early_sessions AS (   -- the episode's sessions 1..early_sessions with their WAI means by rater
    SELECT s.source, s.patient_id, s.episode_id, s.session_number, s.session_date, s.practitioner_id,
           max(m.score) FILTER (WHERE m.instrument = 'wai_sr' AND m.rater = 'patient' AND m.scale = 'mean')
               AS wai_sr_mean,
           max(m.score) FILTER (
               WHERE m.instrument = 'wai_therapist' AND m.rater = 'clinician' AND m.scale = 'mean'
           ) AS wai_clinician_mean
    FROM staging.sessions s
    CROSS JOIN mart_params t
    LEFT JOIN staging.session_measures m ON m.source = s.source AND m.encounter_id = s.encounter_id
    WHERE s.episode_id IS NOT NULL AND s.session_number <= t.early_sessions
    GROUP BY ALL
),

episode_early_alliance AS (   -- one row per episode: early alliance by rater and when it was complete
    SELECT source, patient_id, episode_id,
           avg(wai_sr_mean) AS early_alliance_patient,
           avg(wai_clinician_mean) AS early_alliance_clinician,
           max(session_date) AS last_early_session,
           arg_min(practitioner_id, session_number) AS practitioner_id
    FROM early_sessions
    GROUP BY source, patient_id, episode_id
    HAVING count(wai_sr_mean) > 0 OR count(wai_clinician_mean) > 0
)

SELECT e.source, e.patient_id,
       pseudonym('episode', e.source, e.episode_id) AS period_id,
       pseudonym('practitioner', e.source, e.practitioner_id) AS therapist_key,
       e.early_alliance_patient, e.early_alliance_clinician,
       (e.last_early_session + 1)::DATE AS period_start,
       least(e.last_early_session + $window_days::INTEGER, t.as_of_date)::DATE AS period_end
FROM episode_early_alliance e
CROSS JOIN mart_params t;
