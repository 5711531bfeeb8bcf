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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import orjson

QUALITY_DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS quality",
    """CREATE TABLE IF NOT EXISTS quality.check_results (
        run_id VARCHAR NOT NULL,            -- Dagster run id (or a uuid for runs outside Dagster)
        checked_at TIMESTAMPTZ NOT NULL,
        suite VARCHAR NOT NULL,
        table_name VARCHAR NOT NULL,        -- schema.table the check is about
        expectation_id VARCHAR NOT NULL,    -- the check's id in its suite file
        expectation VARCHAR NOT NULL,       -- Great Expectations type(s) it ran
        severity VARCHAR NOT NULL,          -- ERROR | WARN
        success BOOLEAN,                    -- NULL when skipped (table not present)
        element_count BIGINT,
        unexpected_count BIGINT,            -- distinct offending rows
        unexpected_percent DOUBLE,
        sample_keys JSON,                   -- up to 20 record keys (resource ids only, never names)
        details JSON,                       -- per-expectation results, observed values, errors
        outcome VARCHAR NOT NULL,           -- passed | warning | contained | blocking | skipped
        quarantined BIGINT NOT NULL         -- records this evaluation put in quality.quarantine
    )""",
    """CREATE TABLE IF NOT EXISTS quality.quarantine (
        run_id VARCHAR NOT NULL,
        quarantined_at TIMESTAMPTZ NOT NULL,
        table_name VARCHAR NOT NULL,
        expectation_id VARCHAR NOT NULL,
        severity VARCHAR NOT NULL,
        source VARCHAR,                     -- FHIR source name when the record has one
        record_key VARCHAR NOT NULL,        -- e.g. the response_id for staging.measure_scores
        reason VARCHAR NOT NULL,
        record JSON NOT NULL                -- the offending row as checked
    )""",
    # The newest evaluation of each (table, expectation) decides what is quarantined *now*: when a
    # later run no longer flags a record, it drops out of this view (and stays in the table).
    """CREATE OR REPLACE VIEW quality.current_quarantine AS
        WITH latest AS (
            SELECT table_name, expectation_id, arg_max(run_id, checked_at) AS run_id
            FROM quality.check_results
            GROUP BY table_name, expectation_id
        )
        SELECT q.run_id, q.quarantined_at, q.table_name, q.expectation_id, q.severity, q.source,
               q.record_key, q.reason, q.record
        FROM quality.quarantine q
        JOIN latest l USING (table_name, expectation_id, run_id)""",
    """CREATE OR REPLACE VIEW quality.quarantined_responses AS
        SELECT source, record_key AS response_id,
               string_agg(DISTINCT expectation_id, ', ' ORDER BY expectation_id) AS expectations,
               string_agg(DISTINCT reason, '; ' ORDER BY reason) AS reasons
        FROM quality.current_quarantine
        WHERE table_name = 'staging.measure_scores'
        GROUP BY source, record_key""",
)


def ensure_quality_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the quality schema, tables and views if missing (idempotent)."""
    for stmt in QUALITY_DDL:
        con.execute(stmt)


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
    con.execute(
        """INSERT INTO quality.check_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            row.run_id,
            row.checked_at,
            row.suite,
            row.table_name,
            row.expectation_id,
            row.expectation,
            row.severity,
            row.success,
            row.element_count,
            row.unexpected_count,
            row.unexpected_percent,
            _json(row.sample_keys),
            _json(row.details),
            row.outcome,
            row.quarantined,
        ],
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
        (r[0], r[1])
        for r in con.execute(
            """SELECT coalesce(source, ''), record_key FROM quality.quarantine
               WHERE run_id = ? AND table_name = ? AND expectation_id = ?""",
            [run_id, table_name, expectation_id],
        ).fetchall()
    }
    rows = []
    for rec in records:
        key = (rec.source or "", rec.record_key)
        if key in existing:
            continue
        existing.add(key)
        rows.append(
            [
                run_id,
                at,
                table_name,
                expectation_id,
                severity,
                rec.source,
                rec.record_key,
                rec.reason,
                _json(rec.record),
            ]
        )
    if rows:
        con.executemany("INSERT INTO quality.quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)
