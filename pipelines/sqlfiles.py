"""The one place SQL text is loaded and run: `.sql` files, bound values, declared identifiers.

Every table's SQL lives in a `.sql` file under the package that owns the table (`pipelines/sql/`,
`fhir_mappings/sql/`, `quality_checks/sql/`, `marts/sql/`). Two rules keep data out of SQL text:

- **Values** are always bound parameters: `$name` in the file, `params={"name": value}` here. Each
  statement of a file receives only the parameters it names.
- **Identifiers** (a table name a step writes, a mart to publish) come from the project's own
  declarations, never from data. A file writes `{{ table }}`; `render` replaces it with the quoted
  identifier after checking it is a plain dotted name. Nothing else is substituted into SQL text.

Shared SQL written once (the current version of a resource, FHIR reference parsing, FHIR dates) is
`pipelines/sql/macros.sql`, installed per connection by `install_shared_macros`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

import duckdb

_IDENTIFIER_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MACROS_FILE = Path(__file__).resolve().parent / "sql" / "macros.sql"


class SqlTemplateError(ValueError):
    """A SQL file's placeholders and the identifiers given for it do not match, or a name is unsafe."""


def quote_identifier(name: str) -> str:
    """`schema.table` (or `table`, or `catalog.schema.table`) as a quoted DuckDB identifier.

    Only plain names are accepted (letters, digits, underscore; not starting with a digit), so a
    quoted name can never close its quotes: anything else raises `SqlTemplateError`.
    """
    parts = name.split(".")
    if not 1 <= len(parts) <= 3 or not all(_IDENTIFIER_PART.fullmatch(p) for p in parts):
        raise SqlTemplateError(f"not a plain SQL identifier: {name!r}")
    return ".".join(f'"{p}"' for p in parts)


def render(text: str, identifiers: Mapping[str, str] | None = None) -> str:
    """Replace each `{{ name }}` in `text` by the quoted identifier `identifiers[name]`.

    Every placeholder must be given and every given identifier must be used, so a typo fails loudly.
    """
    given = dict(identifiers or {})
    used = set(_PLACEHOLDER.findall(text))
    missing = used - given.keys()
    unused = given.keys() - used
    if missing or unused:
        raise SqlTemplateError(
            f"SQL placeholders {sorted(used)} do not match identifiers {sorted(given)}"
            f" (missing {sorted(missing)}, unused {sorted(unused)})"
        )
    return _PLACEHOLDER.sub(lambda m: quote_identifier(given[m.group(1)]), text)


@functools.cache
def read_sql(path: Path) -> str:
    """The text of a project `.sql` file (cached: files do not change while the process runs)."""
    if path.suffix != ".sql":
        raise ValueError(f"{path} is not a .sql file")
    return path.read_text(encoding="utf-8")


def run_sql(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    params: Mapping[str, object] | None = None,
    identifiers: Mapping[str, str] | None = None,
) -> None:
    """Run every statement of the file `path` in order, each with the bound parameters it names.

    A parameter the file never names is an error (it was meant for something), and so is a `$name`
    with no value (DuckDB's own error, naming the parameter).
    """
    values = dict(params or {})
    used: set[str] = set()
    for statement in con.extract_statements(render(read_sql(path), identifiers)):
        names = set(statement.named_parameters)
        used |= names
        if names:
            con.execute(statement, {k: values[k] for k in names if k in values})
        else:
            con.execute(statement)
    unused = values.keys() - used
    if unused:
        raise SqlTemplateError(f"{path.name}: parameters {sorted(unused)} are named by no statement")


def _execute_query(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    params: Mapping[str, object] | None,
    identifiers: Mapping[str, str] | None,
) -> duckdb.DuckDBPyConnection:
    """Execute the one query of the file `path` with the bound parameters it names (all must be named)."""
    statements = con.extract_statements(render(read_sql(path), identifiers))
    if len(statements) != 1:
        raise SqlTemplateError(f"{path.name}: expected one statement, found {len(statements)}")
    names = set(statements[0].named_parameters)
    values = dict(params or {})
    if values.keys() - names:
        raise SqlTemplateError(f"{path.name}: parameters {sorted(values.keys() - names)} are not used")
    if names:
        return con.execute(statements[0], {k: values[k] for k in names if k in values})
    return con.execute(statements[0])


def query_sql(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    params: Mapping[str, object] | None = None,
    identifiers: Mapping[str, str] | None = None,
) -> list[tuple[object, ...]]:
    """Run a file holding exactly one query and return its rows."""
    return _execute_query(con, path, params, identifiers).fetchall()


def query_records(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    params: Mapping[str, object] | None = None,
    identifiers: Mapping[str, str] | None = None,
) -> list[dict[str, object]]:
    """Run a file holding exactly one query and return its rows as dicts keyed by column name."""
    cursor = _execute_query(con, path, params, identifiers)
    names = [d[0] for d in cursor.description or ()]
    if len(set(names)) != len(names):
        # a dict would silently keep only the last of two equally named columns
        raise SqlTemplateError(f"{path.name}: column names repeat: {names}")
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def install_shared_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the shared temporary macros (`pipelines/sql/macros.sql`) on this connection (idempotent)."""
    run_sql(con, MACROS_FILE)


def count_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Row count of a declared table (the name is checked and quoted, never taken from data)."""
    return int(con.execute(render("SELECT count(*) FROM {{ t }}", {"t": table})).fetchall()[0][0])
