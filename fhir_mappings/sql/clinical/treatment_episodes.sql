CREATE OR REPLACE TABLE staging.treatment_episodes AS
WITH top_practitioner AS (  -- the episode's most frequent session practitioner (ties: the latest)
    SELECT source, episode_id, practitioner_id
    FROM (SELECT source, episode_id, practitioner_id, count(*) AS n, max(session_number) AS last_seen
          FROM staging.sessions WHERE practitioner_id IS NOT NULL GROUP BY ALL)
    QUALIFY row_number() OVER (PARTITION BY source, episode_id ORDER BY n DESC, last_seen DESC) = 1
),
top_clinic AS (
    SELECT source, episode_id, clinic_id
    FROM (SELECT source, episode_id, clinic_id, count(*) AS n, max(session_number) AS last_seen
          FROM staging.sessions WHERE clinic_id IS NOT NULL GROUP BY ALL)
    QUALIFY row_number() OVER (PARTITION BY source, episode_id ORDER BY n DESC, last_seen DESC) = 1
),
episode_sessions AS (
    SELECT s.source, s.episode_id, any_value(s.episode_basis) AS episode_basis,
           any_value(s.patient_id) AS patient_id,
           count(*) AS sessions_attended,
           min(s.session_date) AS first_session_date, max(s.session_date) AS last_session_date,
           any_value(tp.practitioner_id) AS session_practitioner_id,
           any_value(tc.clinic_id) AS session_clinic_id
    FROM staging.sessions s
    LEFT JOIN top_practitioner tp USING (source, episode_id)
    LEFT JOIN top_clinic tc USING (source, episode_id)
    GROUP BY s.source, s.episode_id
),
care_episodes AS (
    SELECT ep.source, ep.episode_id, 'episode_of_care' AS episode_basis,
           coalesce(ep.patient_id, a.patient_id) AS patient_id, ep.status,
           coalesce(ep.period_start, a.first_session_date) AS period_start,
           ep.period_end,
           ep.status IN ('finished', 'cancelled') AS closed,
           coalesce(a.session_practitioner_id, ep.care_manager_id) AS practitioner_id,
           coalesce(ep.managing_organization_id, a.session_clinic_id) AS clinic_id,
           coalesce(a.sessions_attended, 0) AS sessions_attended,
           a.first_session_date, a.last_session_date
    FROM staging.episodes ep
    LEFT JOIN episode_sessions a ON a.source = ep.source AND a.episode_id = ep.episode_id
    WHERE ep.status IS DISTINCT FROM 'entered-in-error'
),
orphan_episodes AS (  -- sessions naming an EpisodeOfCare the raw layer does not hold (e.g. rejected)
    SELECT a.source, a.episode_id, a.episode_basis, a.patient_id, NULL AS status,
           a.first_session_date AS period_start, NULL::DATE AS period_end, NULL::BOOLEAN AS closed,
           a.session_practitioner_id AS practitioner_id, a.session_clinic_id AS clinic_id,
           a.sessions_attended, a.first_session_date, a.last_session_date
    FROM episode_sessions a
    WHERE a.episode_basis = 'episode_of_care'
      AND NOT EXISTS (SELECT 1 FROM staging.episodes ep
                      WHERE ep.source = a.source AND ep.episode_id = a.episode_id)
),
gap_rule_episodes AS (
    SELECT a.source, a.episode_id, a.episode_basis, a.patient_id, NULL AS status,
           a.first_session_date AS period_start,
           CASE WHEN m.as_of_date - a.last_session_date > m.episode_gap_days
                THEN a.last_session_date END AS period_end,
           m.as_of_date - a.last_session_date > m.episode_gap_days AS closed,
           a.session_practitioner_id AS practitioner_id, a.session_clinic_id AS clinic_id,
           a.sessions_attended, a.first_session_date, a.last_session_date
    FROM episode_sessions a CROSS JOIN mart_params m
    WHERE a.episode_basis = 'gap_rule'
),
episodes AS (
    SELECT * FROM care_episodes UNION ALL BY NAME SELECT * FROM orphan_episodes UNION ALL BY NAME SELECT * FROM gap_rule_episodes
),
birth_dates AS (
    SELECT source, id AS patient_id, resource ->> 'birthDate' AS birth
    FROM current_version('raw.patient')
)
SELECT e.source, e.episode_id, e.episode_basis, e.patient_id, e.status, e.closed,
       e.period_start, e.period_end, e.practitioner_id, e.clinic_id,
       e.sessions_attended::INTEGER AS sessions_attended, e.first_session_date, e.last_session_date,
       age_band(age_at(b.birth, e.period_start)) AS age_band_at_start
FROM episodes e
LEFT JOIN birth_dates b ON b.source = e.source AND b.patient_id = e.patient_id
ORDER BY e.source, e.episode_id;
