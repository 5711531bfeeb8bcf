-- staging.sessions: One row per attended session (finished Encounter), in its treatment episode (the
-- Encounter's EpisodeOfCare, else the gap rule), with its session number.
--
-- Session number: the session's place among the episode's *slots*, by time. A slot is an attended
-- session, or a booked Appointment counted as attended (mart_appointment_statuses) that no attended
-- session references and that falls in the episode's window. So an Encounter lost upstream (rejected
-- by validation, never sent) still holds its number through its fulfilled Appointment, and the later
-- sessions keep theirs: the "sessions 1-3" window is not shifted by a record the pipeline could not
-- read. Where no Appointment exists the numbering is the plain order of attended sessions.
-- Episode window for such appointments: an EpisodeOfCare's period (an open one runs to the reference
-- date; a missing start is its first session); a gap-rule episode's first to last session. When two
-- windows hold an appointment, the latest-starting episode takes it (as _placed_appointments does).
CREATE OR REPLACE TABLE staging.sessions AS
WITH attended_encounters AS (
    SELECT * FROM staging.encounters
    WHERE status = 'finished' AND patient_id IS NOT NULL AND start_date IS NOT NULL
),
gap_starts AS (
    SELECT e.*,
           CASE WHEN lag(start_date) OVER w IS NULL
                     OR start_date - lag(start_date) OVER w > m.episode_gap_days
                THEN 1 ELSE 0 END AS new_episode
    FROM attended_encounters e CROSS JOIN mart_params m
    WHERE e.episode_of_care_id IS NULL
    WINDOW w AS (PARTITION BY e.source, e.patient_id ORDER BY e.period_start, e.encounter_id)
),
gap_numbered AS (
    SELECT *, sum(new_episode) OVER (
               PARTITION BY source, patient_id ORDER BY period_start, encounter_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS episode_no
    FROM gap_starts
),
gap_episodes AS (
    SELECT * EXCLUDE (new_episode, episode_no),
           'gap:' || patient_id || ':'
               || strftime(min(start_date) OVER (PARTITION BY source, patient_id, episode_no),
                           '%Y-%m-%d')
               AS episode_id,
           'gap_rule' AS episode_basis
    FROM gap_numbered
),
all_sessions AS (
    SELECT *, episode_of_care_id AS episode_id, 'episode_of_care' AS episode_basis
    FROM attended_encounters WHERE episode_of_care_id IS NOT NULL
    UNION ALL BY NAME
    SELECT * FROM gap_episodes
),
episode_windows AS (   -- where an attended appointment without a session belongs
    SELECT s.source, s.episode_id, any_value(s.patient_id) AS patient_id,
           coalesce(any_value(ep.period_start), min(s.start_date)) AS win_start,
           CASE WHEN any_value(s.episode_basis) = 'gap_rule' THEN max(s.start_date)
                ELSE coalesce(any_value(ep.period_end), any_value(m.as_of_date)) END AS win_end
    FROM all_sessions s
    CROSS JOIN mart_params m
    LEFT JOIN staging.episodes ep ON ep.source = s.source AND ep.episode_id = s.episode_of_care_id
    GROUP BY s.source, s.episode_id
),
appointments_without_session AS (   -- attended by their status, referenced by no attended session
    SELECT a.source, a.appointment_id, a.patient_id, a.start_at, a.start_date
    FROM staging.appointments a
    JOIN mart_appointment_statuses k ON k.status = a.status AND k.kind = 'attended'
    WHERE a.patient_id IS NOT NULL AND a.start_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM all_sessions s
                      WHERE s.source = a.source AND s.appointment_id = a.appointment_id)
),
unrecorded_slots AS (   -- each such appointment in the latest-starting episode window holding it
    SELECT w.episode_id, a.source, a.appointment_id, a.start_at
    FROM appointments_without_session a
    JOIN episode_windows w ON w.source = a.source AND w.patient_id = a.patient_id
                          AND a.start_date BETWEEN w.win_start AND w.win_end
    QUALIFY row_number() OVER (PARTITION BY a.source, a.appointment_id
                               ORDER BY w.win_start DESC, w.episode_id) = 1
),
slots AS (
    SELECT source, episode_id, period_start AS slot_at, encounter_id AS slot_id, true AS is_session
    FROM all_sessions
    UNION ALL
    SELECT source, episode_id, start_at, 'Appointment/' || appointment_id, false
    FROM unrecorded_slots
),
numbered_slots AS (
    SELECT *, row_number() OVER (PARTITION BY source, episode_id ORDER BY slot_at, slot_id) AS slot_number,
           count(*) FILTER (WHERE NOT is_session) OVER (
               PARTITION BY source, episode_id ORDER BY slot_at, slot_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS unrecorded_before
    FROM slots
)
SELECT s.source, s.encounter_id, s.patient_id, s.episode_id, s.episode_basis,
       n.slot_number AS session_number,
       -- attended appointments before this session with no session of their own (0: plain order)
       n.unrecorded_before::INTEGER AS unrecorded_sessions_before,
       s.start_date AS session_date,
       s.period_start AS session_start,
       s.practitioner_id,
       coalesce(s.clinic_id, ep.managing_organization_id) AS clinic_id,
       s.appointment_id
FROM all_sessions s
JOIN numbered_slots n ON n.source = s.source AND n.episode_id = s.episode_id
                     AND n.slot_id = s.encounter_id AND n.is_session
LEFT JOIN staging.episodes ep ON ep.source = s.source AND ep.episode_id = s.episode_of_care_id
ORDER BY s.source, s.episode_id, session_number;
