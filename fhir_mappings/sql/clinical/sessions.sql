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
)
SELECT s.source, s.encounter_id, s.patient_id, s.episode_id, s.episode_basis,
       row_number() OVER (PARTITION BY s.source, s.episode_id ORDER BY s.period_start, s.encounter_id)
           AS session_number,
       s.start_date AS session_date,
       s.period_start AS session_start,
       s.practitioner_id,
       coalesce(s.clinic_id, ep.managing_organization_id) AS clinic_id,
       s.appointment_id
FROM all_sessions s
LEFT JOIN staging.episodes ep ON ep.source = s.source AND ep.episode_id = s.episode_of_care_id
ORDER BY s.source, s.episode_id, session_number;
