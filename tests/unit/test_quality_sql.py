"""The quality layer's SQL files and declarations: each declared table is what its file creates, the
registry views come from one file, and suite datasets name tables only through declared identifiers
while their values stay bound parameters."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from fhir_mappings.registry import load_registry
from quality_checks.params import register_registry, registry_frames, unregister_registry
from quality_checks.runner import ROW, _fetch
from quality_checks.store import QUALITY_SQL_FILES, ensure_quality_schema
from quality_checks.suite import Dataset, SuiteError, load_suites
from quality_checks.tables import TABLES, WRITERS

REPO = Path(__file__).resolve().parents[2]


def _objects(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute(
        "SELECT table_schema || '.' || table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = 'quality'"
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def test_declared_quality_tables_are_what_the_schema_files_create() -> None:
    con = duckdb.connect()
    ensure_quality_schema(con)
    objects = _objects(con)
    assert set(objects) == {t.name for t in TABLES}
    assert objects["quality.check_results"] == "BASE TABLE"
    assert objects["quality.current_quarantine"] == "VIEW"
    for table in TABLES:
        assert table.sql is not None and table.sql in QUALITY_SQL_FILES
        creates = re.compile(rf"CREATE (OR REPLACE )?(TABLE|VIEW) (IF NOT EXISTS )?{re.escape(table.name)}\b")
        assert creates.search(table.sql.read_text()), table.name
        assert table.grain.startswith("One row per")
    assert set(WRITERS) == {t.name for t in TABLES}
    assert all("assets/checks.py" in w for w in WRITERS.values())


def test_no_quality_module_holds_sql_text() -> None:
    """Every statement of quality_checks/ is a file in quality_checks/sql/ (suites hold dataset SQL)."""
    statement = re.compile(r"""["'](\s*)(SELECT|INSERT|CREATE|DROP|WITH|ATTACH|COPY)\s""")
    for path in (REPO / "quality_checks").glob("*.py"):
        text = path.read_text()
        assert "noqa: S608" not in text, path.name
        assert not statement.search(text), f"{path.name} holds SQL text"


def test_registry_views_are_registered_from_the_file_and_dropped() -> None:
    con = duckdb.connect()
    frames = registry_frames(load_registry())
    names = register_registry(con, frames)
    items = con.execute("SELECT link_ids, item_number FROM qc_registry_items LIMIT 1").fetchall()
    assert isinstance(items[0][0], list) and isinstance(items[0][1], int)
    n = con.execute("SELECT count(*) FROM qc_registry_scales").fetchall()[0][0]
    assert n == len(frames["qc_registry_scales"])
    unregister_registry(con, names)
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM qc_registry_instruments")
    with pytest.raises(ValueError, match="registry frames"):
        register_registry(con, {"qc_registry_other": pd.DataFrame()})


def test_mart_suites_name_their_table_through_a_declared_identifier() -> None:
    suites = {s.name: s for s in load_suites()}
    dataset = suites["mart_qi_monthly"].datasets["mart"]
    assert dataset.identifiers == {"mart": "marts.qi_monthly"}
    assert "{{ mart }}" in dataset.sql and "qi_monthly" not in dataset.sql
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.qi_monthly AS SELECT 1 AS n UNION ALL SELECT 2")
    frame = _fetch(con, dataset, {})
    assert list(frame["n"]) == [1, 2] and list(frame[ROW]) == [0, 1]


def _write_suite(folder: Path, dataset: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "10_t.yaml").write_text(
        "suite: t\nasset: staging/t\ndatasets:\n"
        + dataset
        + "checks:\n  - id: t_present\n    table: staging.t\n    dataset: d\n    severity: WARN\n"
        "    description: present\n    key_columns: [id]\n"
        "    expect: {type: expect_column_values_to_not_be_null, kwargs: {column: id}}\n"
    )
    return folder


def test_suite_identifiers_must_be_required_tables_and_fill_every_placeholder(tmp_path: Path) -> None:
    ok = "  d:\n    requires: [staging.t]\n    identifiers: {t: staging.t}\n    sql: SELECT id FROM {{ t }}\n"
    (suite,) = load_suites(_write_suite(tmp_path / "ok", ok))
    assert suite.datasets["d"].identifiers == {"t": "staging.t"}
    undeclared = "  d:\n    requires: [staging.t]\n    identifiers: {t: staging.u}\n    sql: SELECT 1\n"
    with pytest.raises(SuiteError, match=r"10_t\.yaml: dataset d: identifiers \['staging.u'\]"):
        load_suites(_write_suite(tmp_path / "undeclared", undeclared))
    unfilled = "  d:\n    requires: [staging.t]\n    sql: SELECT id FROM {{ t }}\n"
    with pytest.raises(SuiteError, match=r"dataset d: SQL placeholders \['t'\]"):
        load_suites(_write_suite(tmp_path / "unfilled", unfilled))


def test_dataset_values_are_bound_and_found_by_the_parser() -> None:
    con = duckdb.connect()
    literal = Dataset("d", "SELECT '$not_a_param' AS text, $min_cell AS min_cell", ())
    frame = _fetch(con, literal, {"min_cell": 11, "unused": [1, 2]})
    assert frame.loc[0, "text"] == "$not_a_param" and frame.loc[0, "min_cell"] == 11
    # A value is data, never SQL: a quote in it stays inside the bound string.
    quoted = _fetch(con, Dataset("d", "SELECT $now AS v", ()), {"now": "x'; DROP TABLE y; --"})
    assert quoted.loc[0, "v"] == "x'; DROP TABLE y; --"
    with pytest.raises(SuiteError, match=r"unknown SQL parameter\(s\): \['missing'\]"):
        _fetch(con, Dataset("d", "SELECT $missing AS v", ()), {})
    with pytest.raises(SuiteError, match="expected one query, found 2"):
        _fetch(con, Dataset("d", "SELECT 1; SELECT 2", ()), {})
