"""Write Python-computed rows to a DuckDB table with a fixed schema (stable column types even when empty)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd

Columns = Sequence[tuple[str, str]]  # (name, DuckDB type)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def write_table(
    con: duckdb.DuckDBPyConnection, table: str, columns: Columns, rows: Sequence[Mapping[str, Any]]
) -> int:
    """CREATE OR REPLACE `table` with `columns`, then insert `rows` (missing keys are NULL).

    `table` and the column names are the project's own constants; row values are passed as data
    (a registered DataFrame), never formatted into SQL. NaN and infinities become NULL.
    """
    ddl = ", ".join(f'"{name}" {ctype}' for name, ctype in columns)
    con.execute(f"CREATE OR REPLACE TABLE {table} ({ddl})")
    if not rows:
        return 0
    names = [name for name, _ in columns]
    df = pd.DataFrame([[_clean(r.get(n)) for n in names] for r in rows], columns=names, dtype=object)
    view = "_write_table_df"
    con.register(view, df)
    try:
        select = ", ".join(f'CAST("{name}" AS {ctype})' for name, ctype in columns)
        con.execute(f"INSERT INTO {table} SELECT {select} FROM {view}")  # noqa: S608 - constants only
    finally:
        con.unregister(view)
    return len(rows)
