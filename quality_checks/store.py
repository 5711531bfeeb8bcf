"""The `quality` schema: every check result and every quarantined record, append-only.

- `quality.check_results`: one row per check per evaluation (run id, suite, table, expectation,
  severity, success, counts, up to 20 offending keys). Never updated, never deleted, so QI teams can
  trend data quality run by run.
- `quality.quarantine`: one row per offending record of a failed row-level ERROR check, with the
  reason and the offending row as JSON. Never deleted: a record leaves the *current* quarantine only
  when a newer run of the same check no longer flags it.
- `quality.current_quarantine` (view): the quarantine rows written by the newest evaluation of each
  (table, expectation), the set downstream marts anti-join on.
- `quality.quarantined_responses` (view): one row per (source, response_id) in the current quarantine
  of `staging.measure_scores`, with every reason, for marts that prefer a ready key list.

Each table's and view's SQL is a file in `quality_checks/sql/` (declared in `quality_checks/tables.py`);
the inserts and lookups here are files too, with every value bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from pipelines.sqlfiles import query_sql, read_sql, render, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
# In order: the schema, the two append-only tables, then the views over them.
SCHEMA_FILE = SQL_DIR / "schema.sql"
CHECK_RESULTS_FILE = SQL_DIR / "check_results.sql"
QUARANTINE_FILE = SQL_DIR / "quarantine.sql"
CURRENT_QUARANTINE_FILE = SQL_DIR / "current_quarantine.sql"
QUARANTINED_RESPONSES_FILE = SQL_DIR / "quarantined_responses.sql"
QUALITY_SQL_FILES: tuple[Path, ...] = (
    SCHEMA_FILE,
    CHECK_RESULTS_FILE,
    QUARANTINE_FILE,
    CURRENT_QUARANTINE_FILE,
    QUARANTINED_RESPONSES_FILE,
)


def ensure_quality_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the quality schema, tables and views if missing (idempotent)."""
    for path in QUALITY_SQL_FILES:
        run_sql(con, path)


@dataclass(frozen=True)
class QuarantineRecord:
    """One offending record to keep out of the marts."""

    source: str | None
    record_key: str
    reason: str
    record: dict[str, Any]


@dataclass(frozen=True)
class ResultRow:
    """One row of `quality.check_results`."""

    run_id: str
    checked_at: datetime
    suite: str
    table_name: str
    expectation_id: str
    expectation: str
    severity: str
    success: bool | None
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    sample_keys: list[str]
    details: dict[str, Any]
    outcome: str
    quarantined: int


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def append_result(con: duckdb.DuckDBPyConnection, row: ResultRow) -> None:
    """Append one check result (never updates an earlier row)."""
    run_sql(
        con,
        SQL_DIR / "append_result.sql",
        params={
            "run_id": row.run_id,
            "checked_at": row.checked_at,
            "suite": row.suite,
            "table_name": row.table_name,
            "expectation_id": row.expectation_id,
            "expectation": row.expectation,
            "severity": row.severity,
            "success": row.success,
            "element_count": row.element_count,
            "unexpected_count": row.unexpected_count,
            "unexpected_percent": row.unexpected_percent,
            "sample_keys": _json(row.sample_keys),
            "details": _json(row.details),
            "outcome": row.outcome,
            "quarantined": row.quarantined,
        },
    )


def append_quarantine(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    at: datetime,
    table_name: str,
    expectation_id: str,
    severity: str,
    records: Sequence[QuarantineRecord],
) -> int:
    """Append quarantine rows; returns how many were new.

    Idempotent within a run: a record already quarantined by this run for this (table, expectation)
    is not written twice (a retried Dagster step re-evaluates with the same run id).
    """
    if not records:
        return 0
    existing = {
        (str(source), str(key))
        for source, key in query_sql(
            con,
            SQL_DIR / "quarantined_keys.sql",
            params={"run_id": run_id, "table_name": table_name, "expectation_id": expectation_id},
        )
    }
    rows: list[dict[str, Any]] = []
    for rec in records:
        key = (rec.source or "", rec.record_key)
        if key in existing:
            continue
        existing.add(key)
        rows.append(
            {
                "run_id": run_id,
                "quarantined_at": at,
                "table_name": table_name,
                "expectation_id": expectation_id,
                "severity": severity,
                "source": rec.source,
                "record_key": rec.record_key,
                "reason": rec.reason,
                "record": _json(rec.record),
            }
        )
    if rows:
        # One statement, many rows: executemany binds each record's values (render() checks the file
        # holds no identifier placeholder).
        con.executemany(render(read_sql(SQL_DIR / "append_quarantine.sql")), rows)
    return len(rows)
