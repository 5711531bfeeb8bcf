"""`marts.alliance_sessions`: one row per attended session with its alliance scores by rater, rater
discrepancy, low-alliance flags, and rupture and repair flags.

The SQL is `marts/sql/alliance_sessions.sql`.

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

from pathlib import Path

import duckdb

from pipelines.sqlfiles import count_rows, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
ALLIANCE_SESSIONS_SQL = SQL_DIR / "alliance_sessions.sql"


def build_alliance_sessions(con: duckdb.DuckDBPyConnection) -> int:
    """(Re)build marts.alliance_sessions (after `marts.build.prepare_marts`); returns its row count."""
    run_sql(con, ALLIANCE_SESSIONS_SQL)
    return count_rows(con, "marts.alliance_sessions")
