"""Skip rebuilding a derived layer when nothing it reads has changed.

Raw tables are append-only (landing is idempotent on (source, id, version_id) and never deletes),
so a raw table's (row count, newest fetched_at) changes exactly when a new version lands. A derived
step records the fingerprint of everything it read; on the next run the same fingerprint means the
output is already current and the step does no heavy work (issue: a no-change run is cheap).
Derived tables are rebuilt whole when they do run, so skipping never leaves a partial state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import duckdb

from pipelines.warehouse import table_exists

DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.build_state (
    step VARCHAR PRIMARY KEY,       -- e.g. 'staging.questionnaire_answers'
    fingerprint VARCHAR NOT NULL,   -- hash of the inputs' state when the step last ran
    inputs JSON NOT NULL,           -- the inputs' state itself, for humans
    run_id VARCHAR NOT NULL,
    built_at TIMESTAMPTZ NOT NULL
);
"""


# Append-only tables a step may read besides raw, with the column that grows on every append.
APPEND_ONLY_STAMP = {
    "quality.quarantine": "quarantined_at",
    "quality.check_results": "checked_at",
    "raw.fetch_log": "finished_at",
}


def input_state(
    con: duckdb.DuckDBPyConnection, raw_tables: Iterable[str], steps: Iterable[str] = (), extra: str = ""
) -> dict[str, object]:
    """The state of a step's inputs: raw (and other append-only) tables by (rows, newest stamp),
    upstream steps by their recorded fingerprint, and any `extra` text (e.g. a hash of the
    instrument registry, or of settings)."""
    con.execute(DDL)
    state: dict[str, object] = {}
    for table in raw_tables:
        if not table_exists(con, table):
            state[table] = None
            continue
        if table == "quality.quarantine":
            # What is quarantined now (newest run per check), not how often checks appended rows.
            count, digest = con.execute(
                """SELECT count(*), md5(coalesce(string_agg(table_name || '|' || source || '|' || record_key,
                                                            ',' ORDER BY table_name, source, record_key), ''))
                   FROM (SELECT DISTINCT table_name, source, record_key FROM quality.current_quarantine)"""
            ).fetchall()[0]
            state[table] = [int(count), digest]
            continue
        stamp = APPEND_ONLY_STAMP.get(table, "fetched_at")
        rows, newest = con.execute(
            f"SELECT count(*), max({stamp})::VARCHAR FROM {table}"  # noqa: S608 - names are constants
        ).fetchall()[0]
        state[table] = [int(rows), newest]
    for step in steps:
        got = con.execute("SELECT fingerprint FROM ops.build_state WHERE step = ?", [step]).fetchall()
        state[step] = got[0][0] if got else None
    if extra:
        state["extra"] = hashlib.sha256(extra.encode()).hexdigest()
    return state


def fingerprint(state: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def is_current(
    con: duckdb.DuckDBPyConnection, step: str, state: dict[str, object], outputs: Iterable[str]
) -> bool:
    """True when `step` last ran on exactly these inputs and its output tables still exist."""
    con.execute(DDL)
    got = con.execute("SELECT fingerprint FROM ops.build_state WHERE step = ?", [step]).fetchall()
    return bool(got) and got[0][0] == fingerprint(state) and all(table_exists(con, t) for t in outputs)


def record(con: duckdb.DuckDBPyConnection, step: str, state: dict[str, object], run_id: str) -> None:
    """Remember the inputs a step has just been built from (after its outputs are written)."""
    con.execute(DDL)
    con.execute(
        """INSERT OR REPLACE INTO ops.build_state VALUES (?, ?, ?, ?, now())""",
        [step, fingerprint(state), json.dumps(state, default=str), run_id],
    )
