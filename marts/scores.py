"""Scores linked to sessions: `staging.session_measures`, one row per session x instrument x scale.

Reads `staging.measure_scores` (the scoring contract): valid rows only (`is_valid`, a score, status
completed or amended), minus responses the data-quality layer quarantined
(`quality.current_quarantine`, rows with table_name 'staging.measure_scores' and record_key =
response_id, when that view exists). A score joins its session by `encounter_ref` (and the session's
patient must be the response's subject). When one encounter has several valid responses of the same
instrument (a resubmission), the newest `authored` wins, all of its scales together.
"""

from __future__ import annotations

import duckdb

from marts.common import install_macros, relation_exists

# The columns of staging.measure_scores the marts read (a subset of the scoring contract).
REQUIRED_SCORE_COLUMNS: tuple[str, ...] = (
    "source",
    "response_id",
    "status",
    "instrument",
    "scale",
    "score",
    "is_valid",
    "rater",
    "authored_at",
    "patient_ref",
    "encounter_ref",
)

QUARANTINE_TABLE_NAME = "staging.measure_scores"


class MissingInputError(RuntimeError):
    """An input table the marts need is missing or lacks contract columns."""


def check_score_contract(con: duckdb.DuckDBPyConnection) -> None:
    """Fail clearly when staging.measure_scores is missing or lacks a column the marts read."""
    if not relation_exists(con, "staging", "measure_scores"):
        raise MissingInputError(
            "staging.measure_scores does not exist: materialise the scoring asset (staging/measure_scores) "
            "before the marts"
        )
    cols = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'staging' AND table_name = 'measure_scores'"
        ).fetchall()
    }
    missing = [c for c in REQUIRED_SCORE_COLUMNS if c not in cols]
    if missing:
        raise MissingInputError(f"staging.measure_scores lacks contract columns: {', '.join(missing)}")


def _usable_scores_sql(with_quarantine: bool) -> str:
    quarantine = (
        """
          AND NOT EXISTS (
              SELECT 1 FROM quality.current_quarantine q
              WHERE q.table_name = 'staging.measure_scores' AND q.record_key = s.response_id
                AND (q.source IS NULL OR q.source = s.source))"""
        if with_quarantine
        else ""
    )
    return f"""
        SELECT s.source, s.response_id, s.instrument, s.scale, s.score, s.rater, s.authored_at,
               ref_id(s.patient_ref, 'Patient') AS patient_id,
               ref_id(s.encounter_ref, 'Encounter') AS encounter_id
        FROM staging.measure_scores s
        WHERE s.is_valid AND s.score IS NOT NULL AND s.status IN ('completed', 'amended'){quarantine}
    """  # noqa: S608 - only the project's own SQL is interpolated


def build_session_measures(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """(Re)build `staging.session_measures`; returns its row count and what did not link.

    Needs `staging.sessions`. Counts (responses with a valid total): `rows`; `responses_linked`
    (used); `responses_unlinked` (no encounter, or the encounter is not an attended session of the
    response's patient); `responses_superseded` (older resubmissions at the same encounter);
    `responses_quarantined` (valid responses left out because the quality layer quarantined them).
    """
    check_score_contract(con)
    install_macros(con)
    with_quarantine = relation_exists(con, "quality", "current_quarantine")
    con.execute(f"CREATE OR REPLACE TEMP VIEW _usable_scores AS {_usable_scores_sql(with_quarantine)}")
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _usable_responses AS   -- usable responses that have a valid total
        SELECT source, response_id, any_value(instrument) AS instrument, any_value(rater) AS rater,
               any_value(authored_at) AS authored_at, any_value(patient_id) AS patient_id,
               any_value(encounter_id) AS encounter_id
        FROM _usable_scores
        GROUP BY source, response_id
        HAVING count(*) FILTER (WHERE scale = 'total') > 0
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _linked_responses AS
        SELECT r.*, ses.episode_id, ses.session_number, ses.session_date,
               ses.patient_id AS session_patient_id,
               row_number() OVER (
                   PARTITION BY r.source, r.encounter_id, r.instrument
                   ORDER BY r.authored_at DESC NULLS LAST, r.response_id DESC) AS newest
        FROM _usable_responses r
        JOIN staging.sessions ses
          ON ses.source = r.source AND ses.encounter_id = r.encounter_id
         AND (r.patient_id IS NULL OR r.patient_id = ses.patient_id)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE staging.session_measures AS
        SELECT l.source, l.encounter_id, l.session_patient_id AS patient_id, l.episode_id, l.session_number,
               l.session_date, l.instrument, u.scale, u.score, l.rater, l.response_id, l.authored_at
        FROM _linked_responses l
        JOIN _usable_scores u ON u.source = l.source AND u.response_id = l.response_id
        WHERE l.newest = 1
        ORDER BY l.source, l.episode_id, l.session_number, l.instrument, u.scale
        """
    )
    row = con.execute(
        """SELECT (SELECT count(*) FROM staging.session_measures),
                  (SELECT count(*) FROM _linked_responses WHERE newest = 1),
                  (SELECT count(*) FROM _usable_responses) - (SELECT count(*) FROM _linked_responses),
                  (SELECT count(*) FROM _linked_responses WHERE newest > 1)"""
    ).fetchall()[0]
    quarantined = 0
    if with_quarantine:
        quarantined = con.execute(
            """SELECT count(DISTINCT (s.source, s.response_id)) FROM staging.measure_scores s
               JOIN quality.current_quarantine q
                 ON q.table_name = 'staging.measure_scores' AND q.record_key = s.response_id
                AND (q.source IS NULL OR q.source = s.source)
               WHERE s.is_valid"""
        ).fetchall()[0][0]
    con.execute("DROP TABLE IF EXISTS _linked_responses")
    con.execute("DROP TABLE IF EXISTS _usable_responses")
    con.execute("DROP VIEW IF EXISTS _usable_scores")
    return {
        "rows": int(row[0]),
        "responses_linked": int(row[1]),
        "responses_unlinked": int(row[2]),
        "responses_superseded": int(row[3]),
        "responses_quarantined": int(quarantined),
    }
