"""The SQL-file loader (pipelines/sqlfiles.py): one query per file, identifiers rendered quoted, values
bound, and a mismatch between a file and what its caller gives is an error, never silently ignored."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipelines.sqlfiles import SqlTemplateError, query_records, query_sql, render


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("CREATE SCHEMA marts")
    c.execute("CREATE TABLE marts.t AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'b')) v(k, label)")
    return c


def _file(tmp_path: Path, text: str, name: str = "q.sql") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_render_quotes_identifiers_and_refuses_unsafe_or_unmatched_names():
    assert render("SELECT * FROM {{ schema }}.t", {"schema": "marts"}) == 'SELECT * FROM "marts".t'
    with pytest.raises(SqlTemplateError, match="not a plain SQL identifier"):
        render("SELECT * FROM {{ schema }}.t", {"schema": 'marts"; DROP TABLE x; --'})
    with pytest.raises(SqlTemplateError, match="missing"):
        render("SELECT * FROM {{ schema }}.t", {})
    with pytest.raises(SqlTemplateError, match="unused"):
        render("SELECT 1", {"schema": "marts"})


def test_query_records_binds_values_and_keys_rows_by_column(con, tmp_path):
    path = _file(
        tmp_path,
        "-- rows of t with a label\nSELECT k, label FROM {{ schema }}.t WHERE label = $label ORDER BY k;",
    )
    rows = query_records(con, path, {"label": "b"}, {"schema": "marts"})
    assert rows == [{"k": 2, "label": "b"}, {"k": 3, "label": "b"}]
    # a value is data, never SQL: a quote in it matches nothing and breaks nothing
    assert query_records(con, path, {"label": "b' OR '1'='1"}, {"schema": "marts"}) == []
    assert query_sql(con, path, {"label": "a"}, {"schema": "marts"}) == [(1, "a")]


def test_query_records_refuses_what_does_not_match_the_file(con, tmp_path):
    one = _file(tmp_path, "SELECT k FROM {{ schema }}.t WHERE k = $k;")
    with pytest.raises(SqlTemplateError, match="not used"):
        query_records(con, one, {"k": 1, "other": 2}, {"schema": "marts"})
    with pytest.raises(SqlTemplateError, match="missing"):
        query_records(con, one, {"k": 1})
    two = _file(tmp_path, "SELECT 1; SELECT 2;", "two.sql")
    with pytest.raises(SqlTemplateError, match="expected one statement, found 2"):
        query_records(con, two)
    repeated = _file(tmp_path, "SELECT k, label AS k FROM marts.t;", "repeated.sql")
    with pytest.raises(SqlTemplateError, match="column names repeat"):
        query_records(con, repeated)
    with pytest.raises(ValueError, match=r"not a \.sql file"):
        query_records(con, tmp_path / "q.txt")
