"""The only two ways text from a ViewDefinition reaches generated SQL: a quoted identifier or a literal.

ViewDefinitions are declarations rather than patient data, but they come from files a site drops in, so
nothing from them is spliced into SQL unescaped: names go through `quote_identifier`, values through
`sql_literal`.
"""

from __future__ import annotations

import math
from decimal import Decimal


def quote_identifier(name: str) -> str:
    """Quote `name` as a DuckDB identifier (double quotes, embedded quotes doubled)."""
    if not name or "\x00" in name:
        raise ValueError("an SQL identifier must be non-empty and contain no NUL character")
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str | bool | int | float | Decimal | None) -> str:
    """Render `value` as a DuckDB literal: strings single-quoted with quotes doubled, numbers typed.

    DuckDB string literals do not treat backslashes as escapes, so doubling single quotes is the
    whole escaping rule. Decimals and floats become `CAST('text' AS DOUBLE)` so the number's text
    never reaches the SQL parser as code.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return f"CAST({sql_literal(str(value))} AS BIGINT)"
    if isinstance(value, float | Decimal):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("non-finite numbers have no SQL literal")
        return f"CAST({sql_literal(str(value))} AS DOUBLE)"
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("an SQL string literal cannot contain a NUL character")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for a value of type {type(value).__name__}")
