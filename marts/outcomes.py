"""`marts.episode_outcomes`: one row per treatment episode with baseline and last PHQ-9, GAD-7 and ORS,
change, reliable improvement and deterioration, recovery and reliable recovery (NHS Talking
Therapies), PHQ-9 response and remission, early and mean alliance by rater, ruptures, attendance and
dropout. Thresholds come from mart_params (registry + settings) and are copied beside each row.

Appointments are attributed to the patient's episode whose window contains the appointment date (the
latest-starting one when windows overlap): an EpisodeOfCare's period (open ones run to the
reference date); a gap-rule episode's first session to its last session plus `episode_gap_days`.
SQL: `marts/sql/placed_appointments.sql` (also read by qi_monthly), `episode_appointments.sql`,
`episode_outcomes.sql`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.sqlfiles import count_rows, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
# The work table `_placed_appointments`: appointments placed in episodes; reused by qi_monthly.
PLACED_APPOINTMENTS_SQL = SQL_DIR / "placed_appointments.sql"
EPISODE_APPOINTMENTS_SQL = SQL_DIR / "episode_appointments.sql"
EPISODE_OUTCOMES_SQL = SQL_DIR / "episode_outcomes.sql"


def build_episode_outcomes(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build marts.episode_outcomes (needs marts.alliance_sessions); returns its row count."""
    run_sql(con, PLACED_APPOINTMENTS_SQL)
    run_sql(con, EPISODE_APPOINTMENTS_SQL)
    run_sql(con, EPISODE_OUTCOMES_SQL)
    return count_rows(con, "marts.episode_outcomes")
