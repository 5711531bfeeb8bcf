"""Publish the marts: a DuckDB file and one Parquet file per mart, replaced atomically, to two targets.

Two targets, chosen per mart by its declaration (`TableSpec.published_to` in marts/tables.py,
`marts.build.BI_MARTS` / `RESTRICTED_MARTS`):

- the BI target (`$ALLIANCE_QI_PUBLISH_DIR`, else `published/` beside the warehouse): aggregate marts
  only, suppressed for small cells; files 0640, folders 0750 (the owner's group, e.g. a BI service
  account, reads them);
- the restricted target (`$ALLIANCE_QI_PUBLISH_RESTRICTED_DIR`, else `restricted/` beside the
  warehouse): the record-level marts (session, episode, patient grain) for analysts with record-level
  access; files 0600, folders 0700 (docs/bi-connections.md, "Access model").

BI tools never open the pipeline's warehouse (DuckDB has one writer, and a BI tool holding the file
would block the pipeline). Instead each publish:

1. attaches a new DuckDB file beside the published one (`<dir>/.marts-<uuid>.duckdb.tmp`) to the
   warehouse connection and copies every mart into it as `main.<mart>` (so the published tables are
   addressed simply as `<mart>`), plus a `_published` metadata table;
2. writes each mart from that copy to `<dir>/parquet/.tmp-<mart>-<uuid>.parquet` (DuckDB writes the
   Parquet itself; no pyarrow);
3. `CHECKPOINT`s and detaches the new file, then `os.replace`s it over `<dir>/marts.duckdb` and each
   temporary Parquet file over `<dir>/parquet/<mart>.parquet`.

`os.replace` within one folder is atomic on POSIX: a reader that opens the path sees either the whole
old file or the whole new one, and a reader that already holds the old file open keeps reading the
old file (its inode lives on until closed). Readers reconnect to see new data.

The published file is written in DuckDB's v1.0.0 storage format by default (readable by every
DuckDB since 0.10, which is what BI drivers bundle; DuckDB 2.0's own format is unreadable before
2.0); `ALLIANCE_QI_PUBLISH_STORAGE_VERSION` changes it.

The SQL is `marts/sql/publish/`: values (paths, the storage version, metadata) are bound parameters,
and the tables copied are the declared mart names (`marts.build.BI_MARTS`, `RESTRICTED_MARTS`), checked
and quoted by `pipelines.sqlfiles.render`, never names read from data.

Idempotent: the marts are copied in a fixed row order (`ORDER BY ALL`), so publishing unchanged
marts twice gives identical tables and Parquet rows; only `_published.built_at` and `run_id` change.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import duckdb
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from marts.build import BI_MARTS, RESTRICTED_MARTS
from pipelines.catalog import PublishTarget
from pipelines.filemodes import PRIVATE_DIR, PRIVATE_FILE, SHARED_DIR, SHARED_FILE, make_dir, restrict
from pipelines.settings_base import AreaSettings, SettingsError
from pipelines.sqlfiles import (
    SqlTemplateError,
    count_rows,
    query_sql,
    quote_identifier,
    read_sql,
    render,
    run_sql,
)

# v1.0.0 storage: every DuckDB since 0.10 reads it (BI drivers lag behind the Python package).
DEFAULT_STORAGE_VERSION = "v1.0.0"
PUBLISHED_FILE = "marts.duckdb"
# (file mode, folder mode) of each target: the BI group reads aggregates; record-level data is owner-only.
TARGET_MODES: dict[str, tuple[int, int]] = {
    "bi": (SHARED_FILE, SHARED_DIR),
    "restricted": (PRIVATE_FILE, PRIVATE_DIR),
}
# The declared marts of each target; publishing a declared mart to the other target is refused.
TARGET_MARTS: dict[str, tuple[str, ...]] = {"bi": BI_MARTS, "restricted": RESTRICTED_MARTS}
PARQUET_DIR = "parquet"
METADATA_TABLE = "_published"
# What the key columns are; never anything derived from the key itself.
PSEUDONYMS = "keyed pseudonyms (HMAC-SHA256)"

SQL_DIR = Path(__file__).resolve().parent / "sql" / "publish"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_STORAGE_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")


class PublishError(RuntimeError):
    """Publishing failed; the published files are unchanged and no temporary file is left."""


class PublishSettingsError(SettingsError, PublishError):
    """A publish setting is invalid (a `SettingsError` and a `PublishError`); the message names it."""


class PublishSettings(AreaSettings):
    """Where and in which storage format the marts are published (`ALLIANCE_QI_PUBLISH_<FIELD>`)."""

    model_config = SettingsConfigDict(env_prefix="ALLIANCE_QI_PUBLISH_")
    area = "publish"
    error = PublishSettingsError

    dir: Path | None = None  # `ALLIANCE_QI_PUBLISH_DIR`; None: `published/` beside the warehouse
    # `ALLIANCE_QI_PUBLISH_RESTRICTED_DIR`: the record-level marts; None: `restricted/` beside the warehouse
    restricted_dir: Path | None = None
    # `ALLIANCE_QI_PUBLISH_STORAGE_VERSION`: a version such as v1.2.0, so a typo fails here naming the
    # variable rather than later inside ATTACH
    storage_version: str = Field(default=DEFAULT_STORAGE_VERSION, pattern=_STORAGE_VERSION.pattern)


@dataclass(frozen=True)
class PublishResult:
    """What one publish wrote."""

    database: Path
    parquet_dir: Path
    parquet_files: dict[str, Path]
    row_counts: dict[str, int]
    built_at: datetime
    run_id: str
    storage_version: str
    database_bytes: int
    columns: dict[str, int] = field(default_factory=dict)


def publish_dir(warehouse_path: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """Where to publish: `$ALLIANCE_QI_PUBLISH_DIR`, else `<warehouse folder>/published/`."""
    configured = PublishSettings.load(env=env).dir
    if configured:
        return configured.expanduser().resolve()
    return Path(warehouse_path).resolve().parent / "published"


def restricted_dir(warehouse_path: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """Where the record-level marts go: `$ALLIANCE_QI_PUBLISH_RESTRICTED_DIR`, else `<warehouse
    folder>/restricted/`. Refused when it is the BI target (record-level rows would reach BI users)."""
    settings = PublishSettings.load(env=env)
    configured = settings.restricted_dir
    out = (
        configured.expanduser().resolve()
        if configured
        else Path(warehouse_path).resolve().parent / "restricted"
    )
    if out == publish_dir(warehouse_path, env=env):
        raise PublishSettingsError(
            f"ALLIANCE_QI_PUBLISH_RESTRICTED_DIR: {out} is also the BI publish folder; record-level marts "
            "must be published apart from the aggregates"
        )
    return out


def storage_version(env: Mapping[str, str] | None = None) -> str:
    """The DuckDB storage version of the published file (`$ALLIANCE_QI_PUBLISH_STORAGE_VERSION`)."""
    return PublishSettings.load(env=env).storage_version


def _pipeline_version() -> str:
    try:
        return metadata.version("alliance-qi")
    except metadata.PackageNotFoundError:
        return "unknown"


def _current_catalog(con: duckdb.DuckDBPyConnection) -> tuple[str, str | None]:
    name, path = query_sql(con, SQL_DIR / "current_catalog.sql")[0]
    return str(name), (str(path) if path else None)


def _missing_marts(con: duckdb.DuckDBPyConnection, catalog: str, names: Sequence[str]) -> list[str]:
    have = {str(r[0]) for r in query_sql(con, SQL_DIR / "built_marts.sql", {"catalog": catalog})}
    return [n for n in names if n not in have]


def source_mart(catalog: str, mart: str) -> str:
    """The warehouse table `marts.<mart>` as `copy_mart.sql` names it.

    Through its catalog (`<catalog>.marts.<mart>`) when the catalog's name is a plain identifier: a
    warehouse file called `marts.duckdb` has the catalog `marts`, and there `marts.<mart>` would be
    ambiguous (catalog or schema). A catalog named from a file such as `alliance-qi.duckdb` is not a
    plain identifier, so it is not `marts` and cannot be quoted by `quote_identifier`:
    `marts.<mart>` then means the current database, which `_current_catalog` found to be the warehouse.
    """
    try:
        quote_identifier(catalog)
    except SqlTemplateError:
        return f"marts.{mart}"
    return f"{catalog}.marts.{mart}"


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (the directory entry), where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_marts(
    con: duckdb.DuckDBPyConnection,
    out_dir: str | Path,
    *,
    run_id: str | None = None,
    source_warehouse: str | Path | None = None,
    marts: Sequence[str] | None = None,
    storage: str | None = None,
    target: PublishTarget = "bi",
) -> PublishResult:
    """Copy `marts.<mart>` of the warehouse connection `con` to `<out_dir>/marts.duckdb` and
    `<out_dir>/parquet/<mart>.parquet`, each built aside and moved into place with `os.replace`.

    `con` must be a writable connection (the new file is attached to it); the warehouse itself is
    only read. An error while building leaves the published files as they were and removes the
    temporary files.

    `target` picks the marts (default: the target's declared marts) and the file modes: "bi" files
    0640 in 0750 folders, "restricted" files 0600 in 0700 folders. A declared mart of the other
    target is refused (a record-level mart never reaches the BI folder by a wrong argument).
    """
    if target not in TARGET_MODES:
        raise PublishError(f"unknown publish target {target!r}")
    marts = TARGET_MARTS[target] if marts is None else tuple(marts)
    for name in marts:
        if not _IDENT.match(name):
            raise PublishError(f"not a mart name: {name!r}")
        for other, names in TARGET_MARTS.items():
            if other != target and name in names:
                raise PublishError(f"marts.{name} is declared for the {other} target, not {target}")
    file_mode, dir_mode = TARGET_MODES[target]
    catalog, catalog_path = _current_catalog(con)
    missing = _missing_marts(con, catalog, marts)
    if missing:
        raise PublishError(
            f"cannot publish: marts not built yet: {', '.join('marts.' + m for m in missing)} "
            "(materialize the marts/<name> assets first)"
        )
    version = storage or storage_version()
    if not _STORAGE_VERSION.match(version):
        raise PublishError(f"storage version {version!r}: expected a DuckDB version such as v1.0.0")
    run = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    source = str(source_warehouse) if source_warehouse is not None else (catalog_path or catalog)

    out = make_dir(Path(out_dir).resolve(), dir_mode)
    parquet_dir = make_dir(out / PARQUET_DIR, dir_mode)
    token = uuid.uuid4().hex
    alias = f"publish_{token[:12]}"
    tmp_db = out / f".marts-{token}.duckdb.tmp"
    tmp_parquet = {m: parquet_dir / f".tmp-{m}-{token}.parquet" for m in (*marts, METADATA_TABLE)}
    final_db = out / PUBLISHED_FILE
    built_at = datetime.now(UTC)
    attached = False
    try:
        run_sql(
            con,
            SQL_DIR / "attach.sql",
            {"path": str(tmp_db), "storage_version": version},
            identifiers={"alias": alias},
        )
        attached = True
        counts: dict[str, int] = {}
        columns: dict[str, int] = {}
        for m in marts:
            published = f"{alias}.main.{m}"
            run_sql(
                con,
                SQL_DIR / "copy_mart.sql",
                identifiers={"published": published, "mart": source_mart(catalog, m)},
            )
            counts[m] = count_rows(con, published)
            columns[m] = len(
                query_sql(con, SQL_DIR / "columns.sql", {"catalog": alias, "schema": "main", "table": m})
            )
        metadata_table = {"metadata": f"{alias}.main.{METADATA_TABLE}"}
        run_sql(con, SQL_DIR / "metadata.sql", identifiers=metadata_table)
        # executemany: one bound row per mart (render() quotes the declared table name).
        con.executemany(
            render(read_sql(SQL_DIR / "metadata_row.sql"), metadata_table),
            [
                {
                    "table_name": m,
                    "row_count": counts[m],
                    "column_count": columns[m],
                    "built_at": built_at,
                    "run_id": run,
                    "source_warehouse": source,
                    "pipeline_version": _pipeline_version(),
                    "pseudonyms": PSEUDONYMS,
                    "storage_version": version,
                    "parquet_file": f"{PARQUET_DIR}/{m}.parquet",
                }
                for m in marts
            ],
        )
        for m, path in tmp_parquet.items():
            run_sql(
                con,
                SQL_DIR / "to_parquet.sql",
                {"path": str(path)},
                identifiers={"table": f"{alias}.main.{m}"},
            )
        run_sql(con, SQL_DIR / "checkpoint.sql", identifiers={"alias": alias})
        run_sql(con, SQL_DIR / "detach.sql", identifiers={"alias": alias})
        attached = False
        wal = tmp_db.with_name(tmp_db.name + ".wal")
        if wal.exists():  # everything was checkpointed: a WAL here means the copy is not self-contained
            raise PublishError(f"{tmp_db}: a write-ahead log remained after CHECKPOINT")
        with open(tmp_db, "rb") as fh:
            os.fsync(fh.fileno())
        # Modes before the rename: the final path never exists with wider permissions (the folder,
        # already `dir_mode`, guards the temporary files meanwhile).
        for path in (tmp_db, *tmp_parquet.values()):
            restrict(path, file_mode)
        # Atomic within one folder (POSIX rename): readers see the old file or the new one, never a mix.
        os.replace(tmp_db, final_db)
        for m, path in tmp_parquet.items():
            os.replace(path, parquet_dir / f"{m}.parquet")
        _fsync_dir(out)
        _fsync_dir(parquet_dir)
    except BaseException as exc:
        if attached:
            with contextlib.suppress(duckdb.Error):
                run_sql(con, SQL_DIR / "detach.sql", identifiers={"alias": alias})
        for leftover in (tmp_db, tmp_db.with_name(tmp_db.name + ".wal"), *tmp_parquet.values()):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        if isinstance(exc, duckdb.Error):
            raise PublishError(f"publishing the marts to {out} failed: {exc}") from exc
        raise
    return PublishResult(
        database=final_db,
        parquet_dir=parquet_dir,
        parquet_files={m: parquet_dir / f"{m}.parquet" for m in marts},
        row_counts=counts,
        built_at=built_at,
        run_id=run,
        storage_version=version,
        database_bytes=final_db.stat().st_size,
        columns=columns,
    )


def published_row_counts(database: str | Path) -> dict[str, int]:
    """Row counts of every table in a published file, read through a fresh in-memory connection.

    (ATTACH, not `duckdb.connect(path)`: the latter reuses a database already open in this process,
    which after a publish is the old, replaced file.)
    """
    con = duckdb.connect()
    try:
        run_sql(con, SQL_DIR / "attach_published.sql", {"path": str(database)})
        tables = [str(r[0]) for r in query_sql(con, SQL_DIR / "published_tables.sql")]
        # The published file's own table names (the marts and _published, as publish_marts wrote them):
        # count_rows checks each is a plain identifier before quoting it.
        return {t: count_rows(con, f"published.main.{t}") for t in tables}
    finally:
        con.close()
