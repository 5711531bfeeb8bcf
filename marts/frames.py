"""Between SQL files and Python statistics: read a query file into rows, write computed rows to a table.

The marts whose statistics need Python (therapist_alliance, qi_monthly, alliance_associations) read
their inputs with a query from `marts/sql/` and write their rows here. No SQL text is built from
Python values: queries come from files (`pipelines.sqlfiles`), row values travel as a registered
DataFrame, column types are applied with DuckDB's expression API, and the table name is a declared,
checked identifier.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pipelines.sqlfiles import SqlTemplateError, query_records, quote_identifier, read_sql, render, run_sql

SQL_DIR = Path(__file__).resolve().parent / "sql"
WRITE_ROWS_SQL = SQL_DIR / "write_rows.sql"

Columns = Sequence[tuple[str, str]]  # (name, DuckDB type)

# The column types the marts use: a type is SQL text, so only these known names are accepted.
COLUMN_TYPES = frozenset({"VARCHAR", "INTEGER", "BIGINT", "DOUBLE", "BOOLEAN", "DATE", "TIMESTAMP"})
_ROWS_VIEW = "_write_table_rows"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _relation(con: duckdb.DuckDBPyConnection, path: Path) -> duckdb.DuckDBPyRelation:
    """The single query of `path` (no parameters, no placeholders) as a relation."""
    text = render(read_sql(path))
    statements = con.extract_statements(text)
    if len(statements) != 1 or statements[0].named_parameters:
        raise SqlTemplateError(f"{path.name}: expected one query without parameters")
    return con.sql(statements[0].query)


def query_frame(con: duckdb.DuckDBPyConnection, path: Path) -> pd.DataFrame:
    """The rows of the one-query file `path` as a DataFrame."""
    return _relation(con, path).df()


def query_dicts(con: duckdb.DuckDBPyConnection, path: Path) -> list[dict[str, Any]]:
    """The rows of the one-query file `path` as dicts keyed by column name (the loader's own reader)."""
    return [dict(r) for r in query_records(con, path)]


def write_table(
    con: duckdb.DuckDBPyConnection, table: str, columns: Columns, rows: Sequence[Mapping[str, Any]]
) -> int:
    """CREATE OR REPLACE `table` with `columns` (name, type) holding `rows` (missing keys are NULL).

    `table` and the column names are the project's own declarations (checked as plain identifiers),
    the types come from `COLUMN_TYPES`; row values are passed as data (a registered DataFrame), never
    formatted into SQL. NaN and infinities become NULL. The column types hold even with no rows.
    """
    for name, ctype in columns:
        quote_identifier(name)  # raises on anything but a plain name
        if ctype not in COLUMN_TYPES:
            raise SqlTemplateError(
                f"{table}.{name}: column type {ctype!r} is not one of {sorted(COLUMN_TYPES)}"
            )
    names = [name for name, _ in columns]
    df = pd.DataFrame([[_clean(r.get(n)) for n in names] for r in rows], columns=names, dtype=object)
    typed = con.from_df(df).select(
        *(duckdb.ColumnExpression(name).cast(duckdb.sqltype(ctype)).alias(name) for name, ctype in columns)
    )
    con.register(_ROWS_VIEW, typed)
    try:
        run_sql(con, WRITE_ROWS_SQL, identifiers={"table": table, "rows": _ROWS_VIEW})
    finally:
        con.unregister(_ROWS_VIEW)
    return len(rows)
