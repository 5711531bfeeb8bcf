"""`marts.alliance_sessions`: one row per attended session with its alliance scores by rater, rater
discrepancy, low-alliance flags, and rupture and repair flags.

The SQL is `marts/sql/alliance_sessions.sql`.

Rupture (docs/marts.md, docs/domain.md): a reliable drop in patient-rated alliance from the previous
measured session, judged on the WAI-SR mean when the session and an earlier one have it, else (with
`rupture_srs_rule` 'when_no_wai_sr') on the SRS total; the drop sizes are the registry's
`reliable_drop` thresholds. An SRS below its cut-off is a concern flag, not a rupture. Repair: within
the next `repair_window_sessions` attended sessions one is back at or above the pre-rupture value. A
rupture with no repair yet is 'pending' while the episode is open and fewer than the window's
sessions have followed; otherwise 'not_repaired'.
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
