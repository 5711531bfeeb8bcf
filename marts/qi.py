"""`marts.qi_monthly`: one row per clinic x month, plus one practice-wide row per month.

Every count is attributed to exactly one clinic row, so the practice row is the sum of the month's
clinic rows (sessions: the session's clinic; patients the clinic of their last session in the month;
episodes their episode's clinic, in the month they ended; appointments their episode's clinic;
questionnaire responses their session's clinic). Sessions with no known clinic form a row with a NULL
clinic_key. Small cells (1 to min_cell - 1) are suppressed with complementary suppression across
each row's nested counts and across the clinics of each month (marts.suppression).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from typing import Any

import duckdb

from marts.adherence import compute_pdc
from marts.common import relation_exists
from marts.frames import write_table
from marts.outcomes import PLACED_APPOINTMENTS_SQL
from marts.settings import MartSettings
from marts.suppression import Relation, apply_rates, is_small, suppress

COLUMNS: list[tuple[str, str]] = [
    ("level", "VARCHAR"),
    ("clinic_key", "VARCHAR"),
    ("month", "DATE"),
    ("patients_seen", "INTEGER"),
    ("sessions_attended", "INTEGER"),
    ("sessions_alliance_measured", "INTEGER"),
    ("measurement_completion_rate", "DOUBLE"),
    ("sessions_wai_measured", "INTEGER"),
    ("mean_alliance", "DOUBLE"),
    ("sessions_low_alliance", "INTEGER"),
    ("low_alliance_share", "DOUBLE"),
    ("sessions_srs_measured", "INTEGER"),
    ("mean_srs", "DOUBLE"),
    ("sessions_clinician_measured", "INTEGER"),
    ("mean_alliance_clinician", "DOUBLE"),
    ("ruptures", "INTEGER"),
    ("rupture_rate", "DOUBLE"),
    ("episodes_ended", "INTEGER"),
    ("episodes_outcome_complete", "INTEGER"),
    ("episodes_case_complete", "INTEGER"),
    ("episodes_recovered", "INTEGER"),
    ("recovery_rate", "DOUBLE"),
    ("episodes_reliably_improved", "INTEGER"),
    ("reliable_improvement_rate", "DOUBLE"),
    ("patients_pdc_measured", "INTEGER"),
    ("patients_pdc_adherent", "INTEGER"),
    ("pdc_adherence_rate", "DOUBLE"),
    ("appointments_booked", "INTEGER"),
    ("appointments_attended", "INTEGER"),
    ("attendance_rate", "DOUBLE"),
    ("dq_responses", "INTEGER"),
    ("dq_passed", "INTEGER"),
    ("data_quality_pass_rate", "DOUBLE"),
    ("suppressed_columns", "VARCHAR"),
    ("low_alliance_threshold", "DOUBLE"),
    ("pdc_threshold", "DOUBLE"),
    ("pdc_window_days", "INTEGER"),
    ("min_cell", "INTEGER"),
]

COUNT_COLUMNS: tuple[str, ...] = tuple(
    c for c, t in COLUMNS if t == "INTEGER" and c not in ("pdc_window_days", "min_cell")
)
ROW_RELATIONS: tuple[tuple[str, str], ...] = (
    ("sessions_attended", "sessions_alliance_measured"),
    ("sessions_alliance_measured", "sessions_wai_measured"),
    ("sessions_alliance_measured", "sessions_srs_measured"),
    ("sessions_alliance_measured", "ruptures"),
    ("sessions_attended", "sessions_clinician_measured"),
    ("sessions_wai_measured", "sessions_low_alliance"),
    ("episodes_ended", "episodes_outcome_complete"),
    ("episodes_outcome_complete", "episodes_case_complete"),
    ("episodes_outcome_complete", "episodes_reliably_improved"),
    ("episodes_case_complete", "episodes_recovered"),
    ("patients_seen", "patients_pdc_measured"),
    ("patients_pdc_measured", "patients_pdc_adherent"),
    ("appointments_booked", "appointments_attended"),
    ("dq_responses", "dq_passed"),
)
RATES: dict[str, tuple[str, str]] = {
    "measurement_completion_rate": ("sessions_alliance_measured", "sessions_attended"),
    "low_alliance_share": ("sessions_low_alliance", "sessions_wai_measured"),
    "rupture_rate": ("ruptures", "sessions_alliance_measured"),
    "recovery_rate": ("episodes_recovered", "episodes_case_complete"),
    "reliable_improvement_rate": ("episodes_reliably_improved", "episodes_outcome_complete"),
    "pdc_adherence_rate": ("patients_pdc_adherent", "patients_pdc_measured"),
    "attendance_rate": ("appointments_attended", "appointments_booked"),
    "data_quality_pass_rate": ("dq_passed", "dq_responses"),
}
MEANS: dict[str, str] = {
    "mean_alliance": "sessions_wai_measured",
    "mean_srs": "sessions_srs_measured",
    "mean_alliance_clinician": "sessions_clinician_measured",
}

_PATIENT_MONTHS = """
CREATE OR REPLACE TEMP TABLE _qi_patient_months AS
SELECT s.source, s.patient_id, s.month,
       s.source || '|' || s.patient_id || '|' || strftime(s.month, '%Y-%m') AS period_id,
       s.clinic_id,
       least(last_day(s.month), t.as_of_date) - (t.pdc_window_days - 1) AS period_start,
       least(last_day(s.month), t.as_of_date) AS period_end
FROM (
    SELECT source, patient_id, date_trunc('month', session_date)::DATE AS month,
           arg_max(clinic_id, seq) AS clinic_id   -- the clinic of the month's last session
    FROM (SELECT *, row_number() OVER (PARTITION BY source, patient_id ORDER BY session_start, encounter_id)
                    AS seq FROM staging.sessions)
    GROUP BY ALL
) s CROSS JOIN mart_params t
"""


def _dq_sql(con: duckdb.DuckDBPyConnection) -> str:
    if relation_exists(con, "staging", "questionnaire_responses"):
        responses = """SELECT source, response_id, ref_id(encounter_ref, 'Encounter') AS encounter_id
                       FROM staging.questionnaire_responses WHERE status IN ('completed', 'amended')"""
    else:
        responses = """SELECT DISTINCT source, response_id, ref_id(encounter_ref, 'Encounter') AS encounter_id
                       FROM staging.measure_scores WHERE status IN ('completed', 'amended')"""
    quarantine = (
        """AND NOT EXISTS (SELECT 1 FROM quality.current_quarantine q
                           WHERE q.table_name = 'staging.measure_scores' AND q.record_key = m.response_id
                             AND (q.source IS NULL OR q.source = m.source))"""
        if relation_exists(con, "quality", "current_quarantine")
        else ""
    )
    return f"""
    CREATE OR REPLACE TEMP TABLE _qi_dq AS
    WITH resp AS ({responses}),
    passed AS (
        SELECT DISTINCT m.source, m.response_id FROM staging.measure_scores m
        WHERE m.is_valid AND m.scale = 'total' AND m.status IN ('completed', 'amended') {quarantine}
    )
    SELECT pseudonym('organization', s.source, s.clinic_id) AS clinic_key,
           date_trunc('month', s.session_date)::DATE AS month,
           p.response_id IS NOT NULL AS passed
    FROM resp r
    JOIN staging.sessions s ON s.source = r.source AND s.encounter_id = r.encounter_id
    LEFT JOIN passed p ON p.source = r.source AND p.response_id = r.response_id
    """  # noqa: S608 - only the project's own SQL is interpolated


_BASE = """
WITH ses AS (
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, session_month AS month,
           count(*) AS sessions_attended,
           count(*) FILTER (WHERE alliance_measured) AS sessions_alliance_measured,
           count(wai_sr_mean) AS sessions_wai_measured,
           avg(wai_sr_mean) AS mean_alliance,
           count(*) FILTER (WHERE low_alliance_flag) AS sessions_low_alliance,
           count(srs_total) AS sessions_srs_measured,
           avg(srs_total) AS mean_srs,
           count(wai_clinician_mean) AS sessions_clinician_measured,
           avg(wai_clinician_mean) AS mean_alliance_clinician,
           count(*) FILTER (WHERE rupture_flag) AS ruptures
    FROM marts.alliance_sessions
    GROUP BY GROUPING SETS ((clinic_key, session_month), (session_month))
),
pat AS (
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, month,
           count(*) AS patients_seen,
           count(q.pdc) AS patients_pdc_measured,
           count(*) FILTER (WHERE q.adherent) AS patients_pdc_adherent
    FROM (SELECT pm.*, pseudonym('organization', pm.source, pm.clinic_id) AS clinic_key
          FROM _qi_patient_months pm) p
    LEFT JOIN _qi_pdc q USING (period_id)
    GROUP BY GROUPING SETS ((clinic_key, month), (month))
),
eps AS (
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, end_month AS month,
           count(*) AS episodes_ended,
           count(*) FILTER (WHERE outcome_complete) AS episodes_outcome_complete,
           count(*) FILTER (WHERE outcome_complete AND case_at_start) AS episodes_case_complete,
           count(*) FILTER (WHERE recovery) AS episodes_recovered,
           count(*) FILTER (WHERE reliable_improvement) AS episodes_reliably_improved
    FROM marts.episode_outcomes
    WHERE episode_closed AND end_month IS NOT NULL
    GROUP BY GROUPING SETS ((clinic_key, end_month), (end_month))
),
appt AS (
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, month,
           count(*) AS appointments_booked,
           count(*) FILTER (WHERE kind = 'attended') AS appointments_attended
    FROM (SELECT pseudonym('organization', source, clinic_id) AS clinic_key,
                 date_trunc('month', start_date)::DATE AS month, kind
          FROM _placed_appointments)
    GROUP BY GROUPING SETS ((clinic_key, month), (month))
),
dq AS (
    SELECT GROUPING(clinic_key) = 1 AS practice, clinic_key, month,
           count(*) AS dq_responses, count(*) FILTER (WHERE passed) AS dq_passed
    FROM _qi_dq
    GROUP BY GROUPING SETS ((clinic_key, month), (month))
),
keys AS (
    SELECT practice, clinic_key, month FROM ses
    UNION SELECT practice, clinic_key, month FROM pat
    UNION SELECT practice, clinic_key, month FROM eps
    UNION SELECT practice, clinic_key, month FROM appt
    UNION SELECT practice, clinic_key, month FROM dq
)
SELECT CASE WHEN k.practice THEN 'practice' ELSE 'clinic' END AS level, k.clinic_key, k.month,
       ses.* EXCLUDE (practice, clinic_key, month), pat.* EXCLUDE (practice, clinic_key, month),
       eps.* EXCLUDE (practice, clinic_key, month), appt.* EXCLUDE (practice, clinic_key, month),
       dq.* EXCLUDE (practice, clinic_key, month),
       t.wai_sr_low_alliance_mean AS low_alliance_threshold, t.pdc_threshold, t.pdc_window_days, t.min_cell
FROM keys k
CROSS JOIN mart_params t
LEFT JOIN ses ON ses.practice = k.practice AND ses.clinic_key IS NOT DISTINCT FROM k.clinic_key
            AND ses.month = k.month
LEFT JOIN pat ON pat.practice = k.practice AND pat.clinic_key IS NOT DISTINCT FROM k.clinic_key
            AND pat.month = k.month
LEFT JOIN eps ON eps.practice = k.practice AND eps.clinic_key IS NOT DISTINCT FROM k.clinic_key
            AND eps.month = k.month
LEFT JOIN appt ON appt.practice = k.practice AND appt.clinic_key IS NOT DISTINCT FROM k.clinic_key
              AND appt.month = k.month
LEFT JOIN dq ON dq.practice = k.practice AND dq.clinic_key IS NOT DISTINCT FROM k.clinic_key
            AND dq.month = k.month
WHERE k.month IS NOT NULL
ORDER BY k.month, k.practice, k.clinic_key NULLS LAST
"""


def qi_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The unsuppressed clinic x month and practice x month rows (needs the upstream marts)."""
    con.execute(PLACED_APPOINTMENTS_SQL)
    con.execute(_PATIENT_MONTHS)
    compute_pdc(con, "_qi_patient_months", "_qi_pdc")
    con.execute(_dq_sql(con))
    cur = con.execute(_BASE)
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    for row in rows:
        for col in COUNT_COLUMNS:
            row[col] = int(row.get(col) or 0)
        for rate, (num, den) in RATES.items():
            row[rate] = row[num] / row[den] if row[den] else None
    return rows


def suppress_qi_rows(rows: list[dict[str, Any]], min_cell: int) -> None:
    """Primary and complementary suppression within rows and across each month's clinics; blanks
    rates whose numerator or denominator is suppressed and means over a small count. In place."""
    values: dict[tuple[Hashable, str], int | None] = {}
    relations: list[Relation] = []
    by_month: dict[Any, dict[str, list[int]]] = defaultdict(lambda: {"practice": [], "clinic": []})
    for i, row in enumerate(rows):
        for col in COUNT_COLUMNS:
            values[(i, col)] = row.get(col)
        for total, part in ROW_RELATIONS:
            relations.append(Relation((i, total), ((i, part),), hidden_remainder=True))
        by_month[row["month"]][row["level"]].append(i)
    for groups in by_month.values():
        for p in groups["practice"]:
            for col in COUNT_COLUMNS:
                relations.append(Relation((p, col), tuple((c, col) for c in groups["clinic"])))
    result = suppress(values, relations, min_cell)
    blanked = result.suppressed | apply_rates(result.suppressed, RATES, range(len(rows)))
    for i, row in enumerate(rows):
        gone = [col for col in (*COUNT_COLUMNS, *RATES) if (i, col) in blanked]
        for mean, n_col in MEANS.items():
            if is_small(row.get(n_col), min_cell):
                gone.append(mean)
        for col in gone:
            row[col] = None
        row["suppressed_columns"] = ",".join(sorted(gone)) or None


def build_qi_monthly(con: duckdb.DuckDBPyConnection, settings: MartSettings) -> int:
    """(Re)build marts.qi_monthly (needs alliance_sessions and episode_outcomes)."""
    rows = qi_rows(con)
    suppress_qi_rows(rows, settings.min_cell)
    return write_table(con, "marts.qi_monthly", COLUMNS, rows)
