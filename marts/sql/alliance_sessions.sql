-- marts.alliance_sessions: One row per attended session, with its alliance scores by rater, the rater
-- discrepancy, low-alliance flags, and rupture and repair flags (definitions: docs/marts.md).
-- Needs the temp table mart_params (thresholds and settings, one row) and the pseudonym() function.
--
-- Rupture: the patient-rated WAI-SR mean falls by at least rupture_drop from the previous session with
-- a WAI-SR score, or the SRS total falls below its cut-off (rupture_srs_rule). Repair: within the next
-- repair_window_sessions attended sessions, every measure that flagged the rupture is back at or above
-- its pre-rupture value. An unrepaired rupture is 'pending' while the episode is open and the window
-- has not passed, otherwise 'not_repaired'.
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

rupture_flags AS (
    SELECT p.*,
           p.prev_wai_sr_mean - p.wai_sr_mean AS wai_sr_drop,
           coalesce(p.prev_wai_sr_mean - p.wai_sr_mean >= t.rupture_drop, FALSE) AS wai_rupture,
           coalesce(CASE t.rupture_srs_rule
                        WHEN 'off' THEN FALSE
                        WHEN 'below' THEN p.srs_total < t.srs_concern_below
                        ELSE p.srs_total < t.srs_concern_below AND p.prev_srs_total >= t.srs_concern_below
                    END, FALSE) AS srs_rupture
    FROM with_previous_scores p
    CROSS JOIN mart_params t
),

repairs AS (   -- per rupture: the first later session in the window that repairs it, and how many followed
    SELECT r.source, r.encounter_id,
           min(n.session_number) FILTER (
               WHERE (NOT r.wai_rupture OR n.wai_sr_mean >= r.prev_wai_sr_mean)
                 AND (NOT r.srs_rupture OR n.srs_total >= r.prev_srs_total)) AS repair_session_number,
           count(n.session_number) AS later_sessions
    FROM rupture_flags r
    CROSS JOIN mart_params t
    LEFT JOIN sessions_with_scores n
           ON n.source = r.source AND n.episode_id = r.episode_id
          AND n.session_number > r.session_number
          AND n.session_number <= r.session_number + t.repair_window_sessions
    WHERE r.wai_rupture OR r.srs_rupture
    GROUP BY r.source, r.encounter_id
),

sessions_judged AS (   -- every session with its rupture's repair status
    SELECT f.*, rp.repair_session_number,
           CASE
               WHEN NOT (f.wai_rupture OR f.srs_rupture) THEN NULL
               WHEN rp.repair_session_number IS NOT NULL THEN 'repaired'
               WHEN rp.later_sessions >= t.repair_window_sessions OR te.closed THEN 'not_repaired'
               ELSE 'pending'
           END AS repair_status
    FROM rupture_flags f
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
    CASE WHEN j.wai_sr_mean IS NULL AND j.srs_total IS NULL THEN NULL
         ELSE j.wai_rupture OR j.srs_rupture END AS rupture_flag,
    CASE WHEN j.wai_rupture AND j.srs_rupture THEN 'wai_sr_drop+srs_below_cutoff'
         WHEN j.wai_rupture THEN 'wai_sr_drop'
         WHEN j.srs_rupture THEN 'srs_below_cutoff' END AS rupture_basis,
    CASE j.repair_status WHEN 'repaired' THEN TRUE WHEN 'not_repaired' THEN FALSE END AS repair_flag,
    j.repair_status,
    j.repair_session_number::INTEGER AS repair_session_number,
    t.wai_sr_low_alliance_mean AS low_alliance_threshold,
    t.wai_therapist_low_alliance_mean AS clinician_low_alliance_threshold,
    t.srs_concern_below,
    t.rupture_drop AS rupture_drop_threshold,
    t.rupture_srs_rule,
    t.repair_window_sessions::INTEGER AS repair_window_sessions
FROM sessions_judged j
CROSS JOIN mart_params t
ORDER BY episode_key, session_number;
