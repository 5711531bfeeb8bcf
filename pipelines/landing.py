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

from pipelines.warehouse import table_for

# Per table: the columns that identify a row, for the idempotent anti-join.
_KEYS: dict[str, tuple[str, ...]] = {
    "rejected": ("source", "id", "version_id"),
    "findings": ("source", "id", "version_id", "path", "message"),
    "fetch_log": ("run_id", "source", "resource_type", "started_at"),
    "canonical_resolution": ("source", "canonical", "run_id", "checked_at"),
}


def landing_path(root: str | Path, source: str, resource_type: str) -> Path:
    """Where one source's pulls of one resource type land."""
    return Path(root) / source / f"{table_for(resource_type)}.duckdb"


def _anti_join(table: str, keys: tuple[str, ...]) -> str:
    cond = " AND ".join(f"w.{k} IS NOT DISTINCT FROM l.{k}" for k in keys)
    return (
        f"INSERT INTO raw.{table} SELECT l.* FROM land.raw.{table} l "  # noqa: S608 - constant names
        f"WHERE NOT EXISTS (SELECT 1 FROM raw.{table} w WHERE {cond})"
    )


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
        con.execute("BEGIN TRANSACTION")
        try:
            for name, keys in ((table, ("source", "id", "version_id")), *_KEYS.items()):
                count = f"SELECT count(*) FROM raw.{name}"  # noqa: S608 - constant names
                before = con.execute(count).fetchall()[0][0]
                con.execute(_anti_join(name, keys))
                added[name] = int(con.execute(count).fetchall()[0][0]) - before
            # Watermarks only move forward, as in the landing file itself.
            con.execute(
                """INSERT INTO raw.watermarks SELECT * FROM land.raw.watermarks
                   ON CONFLICT (source, resource_type) DO UPDATE SET
                     watermark = greatest(raw.watermarks.watermark, excluded.watermark),
                     run_id = excluded.run_id, updated_at = excluded.updated_at"""
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute("DETACH land")
    added["merge_seconds"] = round(time.monotonic() - t0, 3)
    return added
