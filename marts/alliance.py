"""`marts.alliance_sessions`: one row per attended session with its alliance scores by rater, rater
discrepancy, low-alliance flags, and rupture and repair flags.

Rupture (docs/marts.md; docs/domain.md has the reliable-drop definition this is moving to;
thresholds in mart_params): the patient-rated WAI-SR mean falls by at least `rupture_drop` from the
previous session with a WAI-SR score, or the SRS total falls below its cut-off (`rupture_srs_rule`:
'falls_below' = below the cut-off after a session at or above it, 'below' = any session below it,
'off'). Repair: within the next `repair_window_sessions` attended sessions there is a session where
every measure that flagged the rupture is back at or above its pre-rupture value. A rupture with no
repair yet is 'pending' while the episode is open and fewer than the window's sessions have
followed; otherwise 'not_repaired'.
"""

from __future__ import annotations

import duckdb

ALLIANCE_SESSIONS_SQL = """
CREATE OR REPLACE TABLE marts.alliance_sessions AS
WITH m AS (
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
s AS (
    SELECT ses.*, m.* EXCLUDE (source, encounter_id)
    FROM staging.sessions ses LEFT JOIN m USING (source, encounter_id)
),
prev AS (
    SELECT s.*,
           last_value(wai_sr_mean IGNORE NULLS) OVER w AS prev_wai_sr_mean,
           last_value(srs_total IGNORE NULLS) OVER w AS prev_srs_total
    FROM s
    WINDOW w AS (PARTITION BY source, episode_id ORDER BY session_number
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
flags AS (
    SELECT p.*,
           p.prev_wai_sr_mean - p.wai_sr_mean AS wai_sr_drop,
           coalesce(p.prev_wai_sr_mean - p.wai_sr_mean >= t.rupture_drop, FALSE) AS wai_rupture,
           coalesce(CASE t.rupture_srs_rule
                        WHEN 'off' THEN FALSE
                        WHEN 'below' THEN p.srs_total < t.srs_concern_below
                        ELSE p.srs_total < t.srs_concern_below AND p.prev_srs_total >= t.srs_concern_below
                    END, FALSE) AS srs_rupture
    FROM prev p CROSS JOIN mart_params t
),
repair AS (
    SELECT r.source, r.encounter_id,
           min(n.session_number) FILTER (
               WHERE (NOT r.wai_rupture OR n.wai_sr_mean >= r.prev_wai_sr_mean)
                 AND (NOT r.srs_rupture OR n.srs_total >= r.prev_srs_total)) AS repair_session_number,
           count(n.session_number) AS later_sessions
    FROM flags r
    CROSS JOIN mart_params t
    LEFT JOIN s n
           ON n.source = r.source AND n.episode_id = r.episode_id
          AND n.session_number > r.session_number
          AND n.session_number <= r.session_number + t.repair_window_sessions
    WHERE r.wai_rupture OR r.srs_rupture
    GROUP BY r.source, r.encounter_id
),
judged AS (
    SELECT f.*, rp.repair_session_number,
           CASE
               WHEN NOT (f.wai_rupture OR f.srs_rupture) THEN NULL
               WHEN rp.repair_session_number IS NOT NULL THEN 'repaired'
               WHEN rp.later_sessions >= t.repair_window_sessions OR te.closed THEN 'not_repaired'
               ELSE 'pending'
           END AS repair_status
    FROM flags f
    CROSS JOIN mart_params t
    LEFT JOIN repair rp USING (source, encounter_id)
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
FROM judged j CROSS JOIN mart_params t
ORDER BY episode_key, session_number
"""


def build_alliance_sessions(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build marts.alliance_sessions (after `marts.build.prepare_marts`); returns its row count."""
    con.execute(ALLIANCE_SESSIONS_SQL)
    return int(con.execute("SELECT count(*) FROM marts.alliance_sessions").fetchall()[0][0])
