-- Work table _placed_appointments: One row per booked appointment with a counted status, placed in the
-- patient's treatment episode whose window contains its date (the latest-starting one when windows
-- overlap). Read by marts.episode_outcomes and marts.qi_monthly.
-- Episode window: an EpisodeOfCare's period (an open one runs to the reference date); a gap-rule
-- episode's first session to its last session plus episode_gap_days.
CREATE OR REPLACE TEMP TABLE _placed_appointments AS
WITH episode_windows AS (
    SELECT te.source, te.episode_id, te.patient_id, te.clinic_id, te.period_start AS win_start,
           CASE WHEN te.episode_basis = 'gap_rule'
                THEN te.last_session_date + t.episode_gap_days
                ELSE coalesce(te.period_end, t.as_of_date) END AS win_end
    FROM staging.treatment_episodes te
    CROSS JOIN mart_params t
),

counted_appointments AS (   -- attended or missed, by the configured appointment statuses
    SELECT a.source, a.appointment_id, a.patient_id, a.status, a.start_at, a.start_date, k.kind
    FROM staging.appointments a
    JOIN mart_appointment_statuses k ON k.status = a.status
)

SELECT w.episode_id, w.clinic_id, a.*
FROM counted_appointments a
JOIN episode_windows w ON w.source = a.source AND w.patient_id = a.patient_id
                      AND a.start_date BETWEEN w.win_start AND w.win_end
QUALIFY row_number() OVER (PARTITION BY a.source, a.appointment_id
                           ORDER BY w.win_start DESC, w.episode_id) = 1;
