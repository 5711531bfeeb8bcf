-- Work table _episode_appointments: One row per treatment episode with booked appointments: counts by
-- outcome and the kind (attended or missed) of its last booked appointment. Read by marts.episode_outcomes.
CREATE OR REPLACE TEMP TABLE _episode_appointments AS
SELECT source, episode_id,
       count(*) AS appointments_booked,
       count(*) FILTER (WHERE kind = 'attended') AS appointments_attended,
       count(*) FILTER (WHERE status = 'noshow') AS appointments_noshow,
       count(*) FILTER (WHERE status = 'cancelled') AS appointments_cancelled,
       arg_max(kind, start_at) AS last_appointment_kind
FROM _placed_appointments
GROUP BY source, episode_id;
