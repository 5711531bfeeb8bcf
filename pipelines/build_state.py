"""Skip rebuilding a derived step when nothing it reads has changed: written once, for every step.

Raw tables are append-only (landing is idempotent on (source, id, version_id) and never deletes),
so a raw table's (row count, newest stamp) changes exactly when a new version lands. A derived step
records the fingerprint of everything it read; on the next run the same fingerprint means its tables
are already current and the step does no heavy work. Derived tables are rebuilt whole when they do
run, so skipping never leaves a partial state. The fingerprint is also the assets' Dagster
`DataVersion`, so the UI shows what the skip logic knows.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from pipelines.sqlfiles import count_rows, query_sql, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql" / "build_state"

# Append-only tables a step may read, with the column that grows on every append (default fetched_at).
APPEND_ONLY_STAMP = {
    "quality.check_results": "checked_at",
    "raw.fetch_log": "finished_at",
    "raw.rejected": "rejected_at",
    "raw.findings": "found_at",
}
# The quarantine and its views: their state is the set of records quarantined now, not how often
# checks appended rows.
QUARANTINE_TABLES = ("quality.quarantine", "quality.current_quarantine", "quality.quarantined_responses")


# Connections that already ran schema.sql: a skipped step asks for its state several times, and each
# CREATE ... IF NOT EXISTS is a write transaction (about a millisecond apiece on every step).
_ENSURED: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """`ops.build_state` (idempotent; runs its DDL once per connection)."""
    if con in _ENSURED:
        return
    run_sql(con, SQL_DIR / "schema.sql")
    _ENSURED.add(con)


def _existing(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every `schema.name` table and view the connection sees: one catalog query for all the
    existence tests of a step (information_schema costs about a millisecond per table asked)."""
    rows = con.execute(
        """SELECT schema_name || '.' || table_name FROM duckdb_tables()
           UNION ALL
           SELECT schema_name || '.' || view_name FROM duckdb_views() WHERE NOT internal"""
    ).fetchall()
    return {str(r[0]) for r in rows}


def _table_state(
    con: duckdb.DuckDBPyConnection, table: str, own: Sequence[str] = (), existing: set[str] | None = None
) -> list[object] | None:
    existing = _existing(con) if existing is None else existing
    if table == "quality.check_results" and own and table in existing:
        rows, newest = query_sql(con, SQL_DIR / "check_results_state.sql", {"own_tables": list(own)})[0]
        return [int(rows), newest]  # type: ignore[call-overload]
    if table in QUARANTINE_TABLES:
        if "quality.current_quarantine" not in existing:
            return None
        count, digest = query_sql(con, SQL_DIR / "quarantine_state.sql")[0]
        return [int(count), str(digest)]  # type: ignore[call-overload]
    if table not in existing:
        return None
    stamp = APPEND_ONLY_STAMP.get(table, "fetched_at")
    rows, newest = query_sql(con, SQL_DIR / "table_state.sql", identifiers={"table": table, "stamp": stamp})[
        0
    ]
    return [int(rows), newest]  # type: ignore[call-overload]


def input_state(
    con: duckdb.DuckDBPyConnection,
    raw_tables: Iterable[str],
    steps: Iterable[str] = (),
    extra: str = "",
    own_outputs: Sequence[str] = (),
) -> dict[str, object]:
    """The state of a step's inputs: raw (and other append-only) tables by (rows, newest stamp),
    upstream steps by their recorded fingerprint, and any `extra` text (e.g. a hash of the
    instrument registry, or of settings). `own_outputs`: the step's tables, whose own quality
    verdicts (appended after it ran) do not count as a change of `quality.check_results`."""
    ensure_schema(con)
    state: dict[str, object] = {}
    raw_tables = list(raw_tables)
    existing = _existing(con) if raw_tables else set()
    for table in raw_tables:
        state[table] = _table_state(con, table, own_outputs, existing)
    for step in steps:
        state[step] = recorded_fingerprint(con, step)
    if extra:
        state["extra"] = hashlib.sha256(extra.encode()).hexdigest()
    return state


def fingerprint(state: dict[str, object]) -> str:
    """A stable hash of an input state."""
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def recorded_fingerprint(con: duckdb.DuckDBPyConnection, step: str) -> str | None:
    """The fingerprint `step` was last built from, or None when it never ran here."""
    ensure_schema(con)
    got = con.execute("SELECT fingerprint FROM ops.build_state WHERE step = ?", [step]).fetchall()
    return str(got[0][0]) if got else None


def is_current(
    con: duckdb.DuckDBPyConnection, step: str, state: dict[str, object], outputs: Iterable[str]
) -> bool:
    """True when `step` last ran on exactly these inputs and its output tables still exist."""
    if recorded_fingerprint(con, step) != fingerprint(state):
        return False
    outputs = list(outputs)
    return not outputs or set(outputs) <= _existing(con)


def record(con: duckdb.DuckDBPyConnection, step: str, state: dict[str, object], run_id: str) -> None:
    """Remember the inputs a step has just been built from (after its outputs are written)."""
    ensure_schema(con)
    con.execute(
        "INSERT OR REPLACE INTO ops.build_state VALUES (?, ?, ?, ?, now())",
        [step, fingerprint(state), json.dumps(state, default=str), run_id],
    )


@dataclass(frozen=True)
class StepRun:
    """What one run of a step did: built or kept, the counts, and the fingerprint (= data version)."""

    skipped: bool
    counts: Mapping[str, int]
    fingerprint: str


def run_step(
    con: duckdb.DuckDBPyConnection,
    step: str,
    *,
    append_only_inputs: Iterable[str],
    upstream_steps: Iterable[str],
    outputs: Iterable[str],
    build: Callable[[], Mapping[str, int]],
    extra: str = "",
    run_id: str,
    force: bool = False,
) -> StepRun:
    """Build `step` unless its inputs are unchanged since it last ran (or `force`, a full refresh).

    A kept step reports each output's current row count as `rows.<table>`; a built step reports what
    `build` returned plus the same row counts.
    """
    outputs = list(outputs)
    state = input_state(con, append_only_inputs, upstream_steps, extra, own_outputs=outputs)
    skipped = not force and is_current(con, step, state, outputs)
    counts: dict[str, int] = {}
    if not skipped:
        counts.update(build())
        record(con, step, state, run_id)
    counts.update({f"rows.{t}": count_rows(con, t) for t in outputs})
    return StepRun(skipped, counts, fingerprint(state))
