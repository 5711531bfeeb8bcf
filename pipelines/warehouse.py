"""The DuckDB warehouse file: connection handling and the raw-layer schema.

DuckDB allows one writer per file. Only Dagster runs write this file (so no reader ever holds the
lock a run needs); BI tools read a published copy. Schemas: `raw` (this module), `staging`,
`quality`, `marts` (later layers).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from pipelines.settings import RESOURCE_TYPES
from pipelines.sqlfiles import render


def table_for(resource_type: str) -> str:
    """Raw table name for a resource type: QuestionnaireResponse -> questionnaire_response."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", resource_type).lower()


RAW_TABLES: dict[str, str] = {t: table_for(t) for t in RESOURCE_TYPES}

_RESOURCE_COLUMNS = """
    source VARCHAR NOT NULL,            -- configured source name (site / EHR)
    resource_type VARCHAR NOT NULL,
    id VARCHAR NOT NULL,                -- FHIR logical id
    version_id VARCHAR NOT NULL,        -- meta.versionId, or 'sha:' + content hash when the server sends none
    version_from_server BOOLEAN NOT NULL,
    last_updated TIMESTAMPTZ,           -- meta.lastUpdated as sent
    content_sha256 VARCHAR NOT NULL,    -- hash of the resource without meta
    resource JSON NOT NULL,             -- the resource exactly as received
    origin VARCHAR,                     -- page URL, bulk file or folder file:line it came from
    run_id VARCHAR NOT NULL,            -- Dagster run that first landed this version
    fetched_at TIMESTAMPTZ NOT NULL,
    deleted BOOLEAN DEFAULT false       -- a tombstone: the server reported the resource deleted
"""

RAW_DDL: list[str] = [
    "CREATE SCHEMA IF NOT EXISTS raw",
    *[f"CREATE TABLE IF NOT EXISTS raw.{t} ({_RESOURCE_COLUMNS})" for t in RAW_TABLES.values()],
    """CREATE TABLE IF NOT EXISTS raw.rejected (
        source VARCHAR NOT NULL,
        resource_type VARCHAR,             -- NULL when the line could not be parsed at all
        id VARCHAR,
        version_id VARCHAR NOT NULL,       -- as in the resource tables; 'sha:' + text hash when unparseable
        reason VARCHAR NOT NULL,
        findings JSON,
        resource_text VARCHAR NOT NULL,    -- what was received, kept verbatim
        origin VARCHAR,
        run_id VARCHAR NOT NULL,
        rejected_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS raw.findings (
        source VARCHAR NOT NULL,
        resource_type VARCHAR NOT NULL,
        id VARCHAR,
        version_id VARCHAR NOT NULL,
        path VARCHAR NOT NULL,
        message VARCHAR NOT NULL,
        error_type VARCHAR,
        blocking BOOLEAN NOT NULL,         -- did this finding cause the rejection
        run_id VARCHAR NOT NULL,
        found_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS raw.fetch_log (
        run_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        resource_type VARCHAR NOT NULL,
        source_kind VARCHAR NOT NULL,
        pull_mode VARCHAR,
        since TIMESTAMPTZ,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ NOT NULL,
        fetched BIGINT NOT NULL,           -- = landed + rejected + duplicates
        landed BIGINT NOT NULL,            -- versions now in raw (new_versions + unchanged)
        new_versions BIGINT NOT NULL,
        unchanged BIGINT NOT NULL,         -- versions already in raw from an earlier run
        rejected BIGINT NOT NULL,
        duplicates BIGINT NOT NULL,        -- the same (id, version) more than once in this pull
        pages BIGINT,
        watermark_after TIMESTAMPTZ
    )""",
    """CREATE TABLE IF NOT EXISTS raw.watermarks (
        source VARCHAR NOT NULL,
        resource_type VARCHAR NOT NULL,
        watermark TIMESTAMPTZ NOT NULL,
        run_id VARCHAR NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (source, resource_type)
    )""",
    """CREATE TABLE IF NOT EXISTS raw.source_files (
        source VARCHAR NOT NULL,           -- folder sources: files already landed for a type, so an
        resource_type VARCHAR NOT NULL,    -- unchanged file (same size and mtime) is not read again
        path VARCHAR NOT NULL,             -- relative to the folder
        size BIGINT NOT NULL,
        mtime_ns BIGINT NOT NULL,
        run_id VARCHAR NOT NULL,
        landed_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (source, resource_type, path)
    )""",
    """CREATE TABLE IF NOT EXISTS raw.bulk_jobs (
        key VARCHAR PRIMARY KEY,           -- source:ResourceType
        state JSON NOT NULL,               -- status URL and kick-off request, so a killed run resumes
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # Warehouses and landing files created before tombstones existed get the column (at the end,
    # so the landing merge's `SELECT l.*` lines up whatever age each file is).
    *[
        f"ALTER TABLE raw.{t} ADD COLUMN IF NOT EXISTS deleted BOOLEAN DEFAULT false"
        for t in RAW_TABLES.values()
    ],
    """CREATE TABLE IF NOT EXISTS raw.canonical_resolution (
        source VARCHAR NOT NULL,
        canonical VARCHAR NOT NULL,        -- as written in QuestionnaireResponse.questionnaire
        resolved_id VARCHAR,               -- Questionnaire id, NULL when the server has none
        status VARCHAR NOT NULL,           -- resolved | not_found | error
        detail VARCHAR,
        run_id VARCHAR NOT NULL,
        checked_at TIMESTAMPTZ NOT NULL
    )""",
]


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Does `schema.table` (a table or a view) exist in the connected database?"""
    schema, _, name = qualified.partition(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def source_rows(con: duckdb.DuckDBPyConnection, table: str, source: str) -> int:
    """Rows of one source in a declared raw table (the name is quoted; the source is bound)."""
    return int(con.execute(render(_SOURCE_ROWS, {"table": table}), [source]).fetchall()[0][0])


_SOURCE_ROWS = "SELECT count(*) FROM {{ table }} WHERE source = ?"


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw schema and tables if they are missing (idempotent)."""
    for stmt in RAW_DDL:
        con.execute(stmt)


def _memory_limit() -> str:
    """DuckDB memory limit per connection: `ALLIANCE_QI_DUCKDB_MEMORY_LIMIT` (default 1GB)."""
    value = os.environ.get("ALLIANCE_QI_DUCKDB_MEMORY_LIMIT", "1GB").strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE):
        raise ValueError(f"ALLIANCE_QI_DUCKDB_MEMORY_LIMIT={value!r} is not a size like 1GB or 512MB")
    return value


@contextlib.contextmanager
def single_threaded(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run DuckDB on one thread inside the block, then restore the setting.

    Why: a parallel aggregate adds floating-point values in a varying order, so an average can
    differ in its last bit between runs (and a rank tie can flip). One thread makes every rebuild of
    the clinical staging tables and the marts give identical rows; they are small enough that the
    cost is negligible.
    """
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        con.execute("SET threads = $threads", {"threads": int(threads)})


class Warehouse:
    """A DuckDB warehouse file. `connect()` opens it read-write with the raw schema in place."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file; waits up to `lock_timeout_s` while another process holds the write lock."""
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.2
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"cannot open warehouse {self.path}: {exc}. Only the pipeline may write it; "
                        "BI tools should read data/published/marts.duckdb"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            # Bounded memory: DuckDB spills to disk beyond this instead of growing the process
            # (docs/benchmarks.md measured the flatten at 2.5 GB for 100k responses without it).
            con.execute(f"SET memory_limit = '{_memory_limit()}'")
            if not read_only:
                ensure_raw_schema(con)
            yield con
        finally:
            con.close()
