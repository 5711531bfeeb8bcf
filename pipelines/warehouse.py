"""The DuckDB warehouse file: connection handling and the raw-layer schema.

DuckDB allows one writer per file. Only Dagster runs write this file (so no reader ever holds the
lock a run needs); BI tools read a published copy. Schemas: `raw` (this module), `staging`,
`quality`, `marts` (later layers).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from pipelines.filemodes import private_umask, restrict_duckdb
from pipelines.settings import RESOURCE_TYPES
from pipelines.sqlfiles import query_sql, render, run_sql


def table_for(resource_type: str) -> str:
    """Raw table name for a resource type: QuestionnaireResponse -> questionnaire_response."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", resource_type).lower()


RAW_TABLES: dict[str, str] = {t: table_for(t) for t in RESOURCE_TYPES}

SQL_DIR = Path(__file__).resolve().parent / "sql" / "raw"
BUILD_STATE_SQL = Path(__file__).resolve().parent / "sql" / "build_state" / "schema.sql"


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


_RAW_SCHEMA_STEP = "schema.raw"


@functools.cache
def _raw_schema_digest() -> str:
    """A hash of the raw DDL (its files and the tables it creates): changes when a migration is added."""
    text = "|".join([(SQL_DIR / "ledgers.sql").read_text(), (SQL_DIR / "resource_table.sql").read_text()])
    return hashlib.sha256(f"{text}|{sorted(RAW_TABLES.values())}".encode()).hexdigest()


def _raw_schema_current(con: duckdb.DuckDBPyConnection) -> bool:
    # Every connection runs this: one catalog query instead of a dozen DDL scripts (about 20 ms a
    # connection, and a pipeline run opens the warehouse once per step).
    try:
        got = con.execute(
            """SELECT (SELECT fingerprint FROM ops.build_state WHERE step = $step),
                      (SELECT count(*) FROM duckdb_tables()
                       WHERE database_name = current_database() AND schema_name = 'raw'
                         AND list_contains($names::VARCHAR[], table_name))""",
            {"step": _RAW_SCHEMA_STEP, "names": list(RAW_TABLES.values())},
        ).fetchall()[0]
    except duckdb.CatalogException:
        return False
    return got[0] == _raw_schema_digest() and got[1] == len(RAW_TABLES)


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw schema and tables if they are missing (idempotent).

    The DDL's hash is recorded in `ops.build_state`; a warehouse that already ran this DDL (and
    still has its raw tables) is not sent it again."""
    if _raw_schema_current(con):
        return
    run_sql(con, SQL_DIR / "ledgers.sql")
    for table in RAW_TABLES.values():
        run_sql(con, SQL_DIR / "resource_table.sql", identifiers={"table": f"raw.{table}"})
    run_sql(con, BUILD_STATE_SQL)
    con.execute(
        "INSERT OR REPLACE INTO ops.build_state VALUES (?, ?, '{}', 'ddl', now())",
        [_RAW_SCHEMA_STEP, _raw_schema_digest()],
    )


def _memory_limit() -> str:
    """DuckDB memory limit per connection: `ALLIANCE_QI_DUCKDB_MEMORY_LIMIT` (default 700MB).

    Why 700MB: the process holds Python, its modules and pandas batches besides DuckDB's buffers. At
    a million responses, flatten, score and marts peaked at 1.10, 1.22 and 1.20 GB with a 1GB cap and
    at 0.82, 0.92 and 0.91 GB with 700MB, for 4 % less to 12 % more time (docs/benchmarks.md).
    """
    value = os.environ.get("ALLIANCE_QI_DUCKDB_MEMORY_LIMIT", DEFAULT_MEMORY_LIMIT).strip()
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


DEFAULT_MEMORY_LIMIT = "700MB"
# DuckDB memory caps of the stages that set their own (docs/benchmarks.md, "DuckDB memory and threads
# per stage"). Landing only appends: DuckDB's buffers beyond this are rows waiting for a checkpoint,
# and a cap leaves the room to Python (measured at 1M responses: 1.5 GB peak with a 1GB cap,
# 0.95 GB with 400MB, no slower).
LANDING_MEMORY_LIMIT = "384MB"


# The flatten (recursive answers view per chunk) and the scoring SQL hold parts that do not spill and
# grow with the data: at 3M responses each ran out of memory at 700MB (docs/benchmarks.md). They run
# with 1GB; their processes then peak at ~1.1 and ~1.2 GB at 1M.
LARGE_STEP_MEMORY_LIMIT = "1GB"


def large_step_memory_limit() -> str:
    """DuckDB cap of the flatten and scoring: `ALLIANCE_QI_DUCKDB_MEMORY_LIMIT` when set, else 1GB."""
    return _memory_limit() if os.environ.get("ALLIANCE_QI_DUCKDB_MEMORY_LIMIT") else LARGE_STEP_MEMORY_LIMIT


@contextlib.contextmanager
def stage_memory_limit(con: duckdb.DuckDBPyConnection, limit: str) -> Iterator[None]:
    """Run the block with DuckDB's memory cap at `limit`, then put the connection's cap back.

    DuckDB shows the limit rounded, so restoring the shown text would not give DuckDB's own default
    back: a connection that had the default gets it back with RESET.
    """
    before = str(query_sql(con, SQL_DIR / "current_memory_limit.sql")[0][0])
    run_sql(con, SQL_DIR / "reset_memory_limit.sql")
    was_default = before == str(query_sql(con, SQL_DIR / "current_memory_limit.sql")[0][0])
    run_sql(con, SQL_DIR / "memory_limit.sql", {"memory_limit": limit})
    try:
        yield
    finally:
        if was_default:
            run_sql(con, SQL_DIR / "reset_memory_limit.sql")
        else:
            run_sql(con, SQL_DIR / "memory_limit.sql", {"memory_limit": before})


class Warehouse:
    """A DuckDB warehouse file. `connect()` opens it read-write with the raw schema in place."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file; waits up to `lock_timeout_s` while another process holds the write lock.

        The file and its write-ahead log are owner-only (0600, `pipelines.filemodes`): it holds
        record-level data. The folder is created with the usual umask (it may also hold the BI target).
        """
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with private_umask():
            with self._open(read_only) as con:
                yield con

    @contextlib.contextmanager
    def _open(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
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
        restrict_duckdb(self.path)  # a file created before this rule, or by another tool
        try:
            # Bounded memory: DuckDB spills to disk beyond this instead of growing the process
            # (docs/benchmarks.md measured the flatten at 2.5 GB for 100k responses without it).
            con.execute("SET memory_limit = $limit", {"limit": _memory_limit()})
            if not read_only:
                ensure_raw_schema(con)
            yield con
        finally:
            con.close()
            restrict_duckdb(self.path)
