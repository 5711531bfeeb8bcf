"""Per-source landing files: parallel extraction, one writer for the warehouse.

DuckDB allows one writer per file. So that several sources (and several resource types) can be
pulled at the same time, each pull writes its own landing file,
`<landing root>/<source>/<snake_type>.duckdb`, with the raw schema. The pull owns that file: it
keeps the type's full history for the source, its watermark and its Bulk export state. Afterwards,
`merge_into_warehouse` copies into the warehouse whatever the warehouse does not yet hold. The copy
is short and transactional, and it is the only moment a pull touches the warehouse. It waits for
the warehouse lock (Warehouse.connect) instead of failing when another writer holds it.

Both steps are idempotent. Landing skips versions already in the landing file, and the merge is an
anti-join on the same keys. A pull killed between landing and merging is therefore completed by the
next run's merge, which copies the rows it missed.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from pipelines.sqlfiles import count_rows, run_sql
from pipelines.warehouse import LANDING_MEMORY_LIMIT, stage_memory_limit, table_for

SQL_DIR = Path(__file__).resolve().parent / "sql" / "raw"
# Ledgers merged after the resource table, each by its own idempotent anti-join (merge_<ledger>.sql).
_LEDGERS = ("rejected", "findings", "fetch_log", "canonical_resolution")


def landing_path(root: str | Path, source: str, resource_type: str) -> Path:
    """Where one source's pulls of one resource type land."""
    return Path(root) / source / f"{table_for(resource_type)}.duckdb"


def merge_into_warehouse(
    con: duckdb.DuckDBPyConnection, landing_file: Path, resource_type: str
) -> dict[str, float]:
    """Copy a landing file's rows that the warehouse lacks (one transaction); returns rows added."""
    if not landing_file.exists():
        return {}
    table = table_for(resource_type)
    t0 = time.monotonic()
    con.execute("ATTACH ? AS land (READ_ONLY)", [str(landing_file)])
    added: dict[str, float] = {}
    try:
        with stage_memory_limit(con, LANDING_MEMORY_LIMIT):
            _merge(con, table, added)
    finally:
        con.execute("DETACH land")
    added["merge_seconds"] = round(time.monotonic() - t0, 3)
    return added


def _merge(con: duckdb.DuckDBPyConnection, table: str, added: dict[str, float]) -> None:
    """The merge transaction itself: the resource table, the ledgers and the watermarks."""
    con.execute("BEGIN TRANSACTION")
    try:
        before = count_rows(con, f"raw.{table}")
        run_sql(
            con,
            SQL_DIR / "merge_resources.sql",
            identifiers={"table": f"raw.{table}", "landing_table": f"land.raw.{table}"},
        )
        added[table] = count_rows(con, f"raw.{table}") - before
        for name in _LEDGERS:
            before = count_rows(con, f"raw.{name}")
            run_sql(con, SQL_DIR / f"merge_{name}.sql")
            added[name] = count_rows(con, f"raw.{name}") - before
        run_sql(con, SQL_DIR / "merge_watermarks.sql")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
