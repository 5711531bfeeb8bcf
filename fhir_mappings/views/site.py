"""Site views: each ViewDefinition file in the site folder becomes a staging table and an asset.

A site drops SQL-on-FHIR v2 ViewDefinition files (`*.json`) into the folder named by
`ALLIANCE_QI_VIEWS_DIR` (or `views_dir` in the sources file). Each file becomes the table
`staging.view_<name>` (`name` from the file), one build step in the catalog (so one Dagster asset
through `assets/factory.py`) that reads the raw table of the view's `resource`. The view is compiled
when the catalog loads, so a broken file fails loading with its file name and the reason, before any
step runs. Every row carries the `source` of its resource in front of the view's columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from fhir_mappings.views.compiler import (
    CompiledView,
    build_view,
    definition_fingerprint,
    load_view_definition,
)
from fhir_mappings.views.errors import ViewDefinitionError
from fhir_mappings.views.sql import quote_identifier
from pipelines.catalog import StepSpec, TableSpec
from pipelines.settings import RESOURCE_TYPES
from pipelines.sqlfiles import count_rows, install_shared_macros, run_sql
from pipelines.warehouse import table_for

SQL_DIR = Path(__file__).resolve().parent.parent / "sql" / "views"
SOURCE_SQL = SQL_DIR / "site_view_source.sql"
TABLE_SQL = SQL_DIR / "site_view_table.sql"
CLEANUP_SQL = SQL_DIR / "site_view_cleanup.sql"
# The relation the compiled view reads (created by SOURCE_SQL) and the one it becomes (read by TABLE_SQL).
SOURCE_RELATION = "site_view_source"
ROWS_RELATION = "site_view_rows"
TABLE_PREFIX = "staging.view_"
# Lower case so the table name needs no quoting in a BI tool; short enough for any identifier limit.
_VIEW_NAME = re.compile(r"[a-z][a-z0-9_]{0,57}")
# The columns every site view table has in front of the view's own.
CARRIED_COLUMNS = ("source",)


@dataclass(frozen=True)
class SiteView:
    """One site ViewDefinition file, validated and compiled."""

    path: Path
    name: str
    resource: str
    definition: dict[str, Any]
    compiled: CompiledView

    @property
    def table(self) -> str:
        """The staging table it becomes: `staging.view_<name>`."""
        return f"{TABLE_PREFIX}{self.name}"

    @property
    def raw_table(self) -> str:
        """The raw table of its resource type (its only input)."""
        return f"raw.{table_for(self.resource)}"

    def fingerprint(self) -> str:
        """A hash of the definition's meaning (key order and whitespace ignored): a changed file rebuilds."""
        return definition_fingerprint(self.definition)


def load_site_view(path: str | Path) -> SiteView:
    """Read, validate and compile one ViewDefinition file; `ViewDefinitionError` names the file."""
    path = Path(path)
    definition = load_view_definition(path)
    name = definition.get("name")
    if not isinstance(name, str) or not _VIEW_NAME.fullmatch(name):
        raise ViewDefinitionError(
            f"{path}: `name` must be a lower-case identifier ([a-z][a-z0-9_]*, at most 58 characters): "
            f"it names the table staging.view_<name>; got {name!r}"
        )
    resource = definition["resource"]  # load_view_definition checked it names a resource type
    if resource not in RESOURCE_TYPES:
        raise ViewDefinitionError(
            f"{path}: resource {resource} is not landed by this pipeline "
            f"(landed: {', '.join(RESOURCE_TYPES)})"
        )
    try:
        compiled = build_view(definition, source_relation=SOURCE_RELATION, carry=CARRIED_COLUMNS)
    except ViewDefinitionError as exc:
        raise ViewDefinitionError(f"{path}: {exc}") from exc
    return SiteView(path, name, resource, definition, compiled)


def load_site_views(folder: str | Path | None) -> tuple[SiteView, ...]:
    """Every `*.json` file of `folder` (sorted by file name); none when `folder` is None.

    A folder that does not exist is an error (a mistyped setting must not silently drop the views),
    and so are two files with the same `name`.
    """
    if folder is None:
        return ()
    folder = Path(folder)
    if not folder.is_dir():
        raise ViewDefinitionError(f"{folder}: the site views folder (ALLIANCE_QI_VIEWS_DIR) is not a folder")
    views: list[SiteView] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.json")):
        view = load_site_view(path)
        if view.name in seen:
            raise ViewDefinitionError(f"{path}: view name {view.name!r} is already used by {seen[view.name]}")
        seen[view.name] = path
        views.append(view)
    return tuple(views)


def build_site_view(con: duckdb.DuckDBPyConnection, view: SiteView) -> dict[str, int]:
    """(Re)build the view's staging table from the current version of each raw resource."""
    install_shared_macros(con)
    try:
        run_sql(con, SOURCE_SQL, params={"raw_table": view.raw_table})
        # The compiled query is SQL the compiler generated: names quoted, values as literals.
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_identifier(ROWS_RELATION)} AS {view.compiled.sql}")
        run_sql(con, TABLE_SQL, identifiers={"table": view.table})
    finally:
        run_sql(con, CLEANUP_SQL)
    return {f"rows.{view.table}": count_rows(con, view.table)}


def site_view_step(view: SiteView) -> StepSpec:
    """The catalog step (and so the Dagster asset) that builds one site view's table."""

    def build(con: duckdb.DuckDBPyConnection, ctx: Any) -> Mapping[str, int]:
        return build_site_view(con, view)

    columns = ", ".join(["source", *(c.name for c in view.compiled.columns)])
    return StepSpec(
        name=view.table,
        layer="staging",
        tables=(
            TableSpec(
                view.table,
                f"One row per row of the site ViewDefinition {view.name!r} over {view.resource}",
                (),
                f"Declared in {view.path.name} (site views folder); columns: {columns}.",
            ),
        ),
        inputs=(view.raw_table,),
        build=build,
        fingerprint_text=lambda ctx: view.fingerprint(),
        description=f"Site ViewDefinition {view.path.name}, compiled to DuckDB SQL.",
        sql_files=(SOURCE_SQL, TABLE_SQL, CLEANUP_SQL),
    )


def site_view_steps(folder: str | Path | None) -> tuple[StepSpec, ...]:
    """One step per site view file of `folder`."""
    return tuple(site_view_step(v) for v in load_site_views(folder))
