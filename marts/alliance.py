"""`marts.alliance_sessions`: one row per attended session with its alliance scores by rater, rater
discrepancy, low-alliance flags, and rupture and repair flags.

The SQL, with the rupture and repair rules, is `marts/sql/alliance_sessions.sql`; thresholds come
from the `mart_params` row (docs/marts.md, "Metric definitions").
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
