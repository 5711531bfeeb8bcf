-- marts.alliance_sessions: One row per attended session, with its alliance scores by rater, the rater
-- discrepancy, low-alliance flags, and rupture and repair flags (definitions: docs/marts.md).
-- Needs the temp table mart_params (thresholds and settings, one row) and the pseudonym() function.
--
-- Rupture: a reliable drop in patient-rated alliance from the previous measured session, judged on one
-- instrument per session: the WAI-SR mean when this session and an earlier one have it (drop of at least
-- the registry's wai_sr_reliable_drop), else, with rupture_srs_rule 'when_no_wai_sr', the SRS total
-- (drop of at least srs_reliable_drop). An SRS below its cut-off is the concern flag, not a rupture.
-- Repair: within the next repair_window_sessions attended sessions, a session is back at or above the
-- pre-rupture value (the last score before the rupture), judged like the rupture: on the WAI-SR when
-- that session and the pre-rupture level have one, else on the SRS. An unrepaired rupture is 'pending' while the episode is open
-- and the window has not passed, otherwise 'not_repaired'.
CREATE OR REPLACE TABLE marts.alliance_sessions AS
WITH session_scores AS (   -- one row per session: each alliance scale of each rater side by side
    SELECT source, encounter_id,
        max(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'total')
            AS wai_sr_total,
        max(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'mean')
            AS wai_sr_mean,
        max(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'goal')
            AS wai_sr_goal,
        max(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'task')
            AS wai_sr_task,
        max(score) FILTER (WHERE instrument = 'wai_sr' AND rater = 'patient' AND scale = 'bond')
            AS wai_sr_bond,
        max(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'total')
            AS wai_t_total,
        max(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'mean')
            AS wai_t_mean,
        max(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'goal')
            AS wai_t_goal,
        max(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'task')
            AS wai_t_task,
        max(score) FILTER (WHERE instrument = 'wai_therapist' AND rater = 'clinician' AND scale = 'bond')
            AS wai_t_bond,
        max(score) FILTER (WHERE instrument = 'srs' AND rater = 'patient' AND scale = 'total') AS srs_total
    FROM staging.session_measures
    GROUP BY source, encounter_id
),

sessions_with_scores AS (   -- every attended session, scored or not
    SELECT ses.*, sc.* EXCLUDE (source, encounter_id)
    FROM staging.sessions ses
    LEFT JOIN session_scores sc USING (source, encounter_id)
),

with_previous_scores AS (   -- the episode's latest earlier WAI-SR mean and SRS total
    SELECT s.*,
           last_value(wai_sr_mean IGNORE NULLS) OVER earlier AS prev_wai_sr_mean,
           last_value(srs_total IGNORE NULLS) OVER earlier AS prev_srs_total
    FROM sessions_with_scores s
    WINDOW earlier AS (PARTITION BY source, episode_id ORDER BY session_number
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),

rupture_flags AS (   -- the instrument each session is judged on, its drop, and whether it is reliable
    SELECT p.*,
           p.prev_wai_sr_mean - p.wai_sr_mean AS wai_sr_drop,
           p.prev_srs_total - p.srs_total AS srs_drop,
           CASE WHEN p.wai_sr_mean IS NOT NULL AND p.prev_wai_sr_mean IS NOT NULL THEN 'wai_sr'
                WHEN t.rupture_srs_rule = 'when_no_wai_sr'
                     AND p.srs_total IS NOT NULL AND p.prev_srs_total IS NOT NULL THEN 'srs'
           END AS judged_on
    FROM with_previous_scores p
    CROSS JOIN mart_params t
),

ruptures_judged AS (
    SELECT f.*,
           -- 1e-9: WAI-SR means are sums / 12, so a drop of exactly the threshold may land a hair below it
           coalesce(CASE f.judged_on
                        WHEN 'wai_sr' THEN f.wai_sr_drop >= t.wai_sr_reliable_drop - 1e-9
                        WHEN 'srs' THEN f.srs_drop >= t.srs_reliable_drop - 1e-9
                    END, FALSE) AS is_rupture
    FROM rupture_flags f
    CROSS JOIN mart_params t
),

repairs AS (   -- per rupture: the first later session in the window that repairs it, and how many followed
    SELECT r.source, r.encounter_id,
           -- a later session is judged like the rupture: on the WAI-SR when it and the pre-rupture
           -- session have one, else on the SRS (a repair at a session whose WAI-SR was lost still counts)
           min(n.session_number) FILTER (
               WHERE CASE WHEN n.wai_sr_mean IS NOT NULL AND r.prev_wai_sr_mean IS NOT NULL
                          THEN n.wai_sr_mean >= r.prev_wai_sr_mean - 1e-9
                          WHEN t.rupture_srs_rule = 'when_no_wai_sr'
                               AND n.srs_total IS NOT NULL AND r.prev_srs_total IS NOT NULL
                          THEN n.srs_total >= r.prev_srs_total
                     END) AS repair_session_number,
           count(n.session_number) AS later_sessions
    FROM ruptures_judged r
    CROSS JOIN mart_params t
    LEFT JOIN sessions_with_scores n
           ON n.source = r.source AND n.episode_id = r.episode_id
          AND n.session_number > r.session_number
          AND n.session_number <= r.session_number + t.repair_window_sessions
    WHERE r.is_rupture
    GROUP BY r.source, r.encounter_id
),

sessions_judged AS (   -- every session with its rupture's repair status
    SELECT f.*, rp.repair_session_number, rp.later_sessions,
           CASE
               WHEN NOT f.is_rupture THEN NULL
               WHEN rp.repair_session_number IS NOT NULL THEN 'repaired'
               WHEN rp.later_sessions >= t.repair_window_sessions OR te.closed THEN 'not_repaired'
               ELSE 'pending'
           END AS repair_status
    FROM ruptures_judged f
    CROSS JOIN mart_params t
    LEFT JOIN repairs rp USING (source, encounter_id)
    LEFT JOIN staging.treatment_episodes te ON te.source = f.source AND te.episode_id = f.episode_id
)

SELECT
    pseudonym('encounter', j.source, j.encounter_id) AS session_key,
    pseudonym('patient', j.source, j.patient_id) AS patient_key,
    pseudonym('episode', j.source, j.episode_id) AS episode_key,
    pseudonym('practitioner', j.source, j.practitioner_id) AS therapist_key,
    pseudonym('organization', j.source, j.clinic_id) AS clinic_key,
    j.episode_basis,
    j.session_number::INTEGER AS session_number,
    j.session_date,
    date_trunc('month', j.session_date)::DATE AS session_month,
    j.wai_sr_total, j.wai_sr_mean, j.wai_sr_goal, j.wai_sr_task, j.wai_sr_bond,
    j.wai_t_total AS wai_clinician_total, j.wai_t_mean AS wai_clinician_mean,
    j.wai_t_goal AS wai_clinician_goal, j.wai_t_task AS wai_clinician_task,
    j.wai_t_bond AS wai_clinician_bond,
    j.srs_total,
    j.wai_sr_mean IS NOT NULL OR j.srs_total IS NOT NULL AS alliance_measured,
    j.wai_sr_mean - j.wai_t_mean AS rater_discrepancy,
    j.wai_sr_mean < t.wai_sr_low_alliance_mean AS low_alliance_flag,
    j.wai_t_mean < t.wai_therapist_low_alliance_mean AS clinician_low_alliance_flag,
    j.srs_total < t.srs_concern_below AS srs_concern_flag,
    j.prev_wai_sr_mean AS previous_wai_sr_mean,
    j.wai_sr_drop,
    j.prev_srs_total AS previous_srs_total,
    j.srs_drop,
    CASE WHEN j.wai_sr_mean IS NULL AND j.srs_total IS NULL THEN NULL ELSE j.is_rupture END AS rupture_flag,
    CASE WHEN j.is_rupture THEN j.judged_on || '_reliable_drop' END AS rupture_basis,
    CASE j.repair_status WHEN 'repaired' THEN TRUE WHEN 'not_repaired' THEN FALSE END AS repair_flag,
    j.repair_status,
    j.repair_session_number::INTEGER AS repair_session_number,
    CASE WHEN j.is_rupture THEN coalesce(j.later_sessions, 0) END::INTEGER AS sessions_after_rupture,
    t.wai_sr_low_alliance_mean AS low_alliance_threshold,
    t.wai_therapist_low_alliance_mean AS clinician_low_alliance_threshold,
    t.srs_concern_below,
    t.wai_sr_reliable_drop AS rupture_drop_threshold,
    t.srs_reliable_drop AS srs_rupture_drop_threshold,
    t.rupture_srs_rule,
    t.repair_window_sessions::INTEGER AS repair_window_sessions
FROM sessions_judged j
CROSS JOIN mart_params t
ORDER BY episode_key, session_number;
