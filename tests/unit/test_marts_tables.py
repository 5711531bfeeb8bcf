"""The mart declarations (marts/tables.py) match the SQL, build every mart, and keep their keys;
the SQL-file helpers of the Python-built marts (marts/frames.py) keep data out of SQL text."""

from __future__ import annotations

import math
import re
from datetime import date

import duckdb
import pytest

from marts.adherence import compute_pdc
from marts.build import MART_NAMES, build_marts
from marts.context import fingerprint_text, make_context
from marts.frames import query_dicts, write_table
from marts.settings import load_mart_settings
from marts.tables import STEPS
from pipelines.catalog import Catalog, TableSpec
from pipelines.sqlfiles import SqlTemplateError
from tests.support.marts_clinic import KEY, Clinic

# A `schema.table` reference in SQL text (comments removed first).
_REFERENCE = re.compile(r"\b((?:raw|staging|marts|quality|ops|published)\.[a-z_][a-z0-9_]*)\b")
# Declared inputs no SQL file names: the check results stand for the quarantine behind qi_monthly's
# data-quality pass rate in the skip-if-unchanged fingerprint.
_FINGERPRINT_ONLY = {"quality.check_results"}


def test_steps_are_declared_in_dependency_order_with_keys_and_grains():
    outside = sorted({i for s in STEPS for i in s.all_inputs if not i.startswith("marts.")})
    catalog = Catalog(tuple(TableSpec(name, "One row per input row") for name in outside), STEPS)
    assert [s.name for s in catalog.ordered_steps()] == [s.name for s in STEPS]
    assert MART_NAMES == tuple(s.name.removeprefix("marts.") for s in STEPS)
    mart_inputs = {s.name: [i for i in s.inputs if i.startswith("marts.")] for s in STEPS}
    assert mart_inputs["marts.episode_outcomes"] == ["marts.alliance_sessions"]
    assert mart_inputs["marts.adherence"] == []
    for step in STEPS:
        assert step.layer == "marts" and len(step.tables) == 1
        assert step.tables[0].key and step.tables[0].grain.startswith("One row per")


def _clinic() -> Clinic:
    """Two therapists, four patients with sessions, appointments, dispenses and outcome scores."""
    c = Clinic()
    for n, (therapist, org) in enumerate((("t1", "c1"), ("t1", "c1"), ("t2", "c2"), ("t2", "c2")), start=1):
        p = f"p{n}"
        c.patient(p)
        c.episode(f"eoc-{p}", p, "2026-03-01", "2026-03-31", org=org)
        for i in (1, 2, 3):
            enc = f"{p}-{i}"
            c.encounter(
                enc, p, f"2026-03-0{i}", eoc=f"eoc-{p}", practitioner=f"Practitioner/{therapist}", org=org
            )
            c.wai(enc, p, 3.0 + (n + i) % 3)
            c.total("phq9", enc, p, 18.0 - 4 * i)
            c.appointment(f"a-{enc}", p, f"2026-03-0{i}", "fulfilled", practitioner=therapist)
        c.dispense(f"d-{p}-1", p, "2026-03-01", 30)
        c.dispense(f"d-{p}-2", p, "2026-03-28", 30)
    # The feedback marts: five more closed PHQ-9 episodes (a curve cell of feedback_min_cell_n = 5)
    # and one open episode to judge against it.
    for n in range(5, 11):
        p = f"p{n}"
        c.patient(p)
        c.episode(
            f"eoc-{p}",
            p,
            "2026-04-01",
            None if n == 10 else "2026-04-30",
            status="active" if n == 10 else "finished",
            org="c2",
        )
        for i in (1, 2, 3):
            enc = f"{p}-{i}"
            c.encounter(enc, p, f"2026-04-0{i}", eoc=f"eoc-{p}", practitioner="Practitioner/t2", org="c2")
            c.total("phq9", enc, p, 18.0 - (n % 3) * i)
    return c


@pytest.fixture(scope="module")
def built() -> tuple[Clinic, dict[str, int]]:
    c = _clinic()
    counts = c.build(reference_date="2026-06-30", min_cell=2, therapist_periods="all", feedback_min_cell_n=5)
    return c, counts


def _comparable(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Rows with NaN spelled out (NaN != NaN would fail an equality of identical rows)."""
    return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in r) for r in rows]


def test_every_step_builds_its_mart_on_a_fresh_preparation(built):
    """What an asset does: the step's own build (which prepares the connection) gives the same rows."""
    c, counts = built
    assert all(counts.values()), counts
    settings = load_mart_settings(
        env={}, reference_date=date(2026, 6, 30), min_cell=2, therapist_periods="all", feedback_min_cell_n=5
    )
    ctx = make_context(settings, KEY)
    for step in STEPS:
        table = step.tables[0].name
        before = _comparable(c.rows(f"SELECT * FROM {table} ORDER BY ALL"))
        assert step.build(c.con, ctx) == {f"rows.{table}": counts[step.tables[0].short_name]}
        assert _comparable(c.rows(f"SELECT * FROM {table} ORDER BY ALL")) == before


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_declared_key_identifies_each_row(built, step):
    c, _ = built
    spec = step.tables[0]
    cols = ", ".join(spec.key)
    dupes = c.rows(f"SELECT {cols}, count(*) FROM {spec.name} GROUP BY ALL HAVING count(*) > 1")
    assert dupes == []
    assert c.rows(f"SELECT count(*) FROM {spec.name}")[0][0] > 0


def test_write_table_keeps_declared_types_with_and_without_rows():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    columns = [("n", "INTEGER"), ("x", "DOUBLE"), ("d", "DATE"), ("label", "VARCHAR")]
    assert write_table(con, "marts.t", columns, []) == 0
    assert [r[:2] for r in con.execute("DESCRIBE marts.t").fetchall()] == columns
    rows = [{"n": 3, "x": math.nan, "d": date(2026, 1, 2)}, {"x": math.inf, "label": "a"}]
    assert write_table(con, "marts.t", columns, rows) == 2
    assert [r[:2] for r in con.execute("DESCRIBE marts.t").fetchall()] == columns
    assert con.execute("SELECT * FROM marts.t ORDER BY n NULLS LAST").fetchall() == [
        (3, None, date(2026, 1, 2), None),
        (None, None, None, "a"),
    ]


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("marts.t; DROP TABLE marts.t", [("n", "INTEGER")]),
        ("marts.t", [('n" INTEGER, "m', "INTEGER")]),
        ("marts.t", [("n", "INTEGER) AS SELECT 1; --")]),
    ],
)
def test_write_table_refuses_anything_but_declared_names_and_known_types(table, columns):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    with pytest.raises(SqlTemplateError):
        write_table(con, table, columns, [{"n": 1}])
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == [(0,)]


def test_pdc_work_tables_are_checked_identifiers(built):
    c, _ = built
    with pytest.raises(SqlTemplateError):
        compute_pdc(c.con, "_adherence_periods; DROP TABLE marts.adherence", "_t")
    assert c.rows("SELECT count(*) FROM marts.adherence")[0][0] > 0


def test_query_files_hold_one_query_without_parameters(tmp_path):
    con = duckdb.connect()
    two = tmp_path / "two.sql"
    two.write_text("SELECT 1 AS a;\nSELECT 2 AS a;\n")
    with pytest.raises(SqlTemplateError):
        query_dicts(con, two)
    one = tmp_path / "one.sql"
    one.write_text("-- a comment\nSELECT 1 AS a, 'x' AS b;\n")
    assert query_dicts(con, one) == [{"a": 1, "b": "x"}]


def test_fingerprint_text_follows_settings_and_key_without_revealing_the_key():
    settings = load_mart_settings(env={})
    base = fingerprint_text(make_context(settings, KEY))
    assert base == fingerprint_text(make_context(settings, KEY))
    assert fingerprint_text(make_context(settings, KEY + b"x")) != base
    assert fingerprint_text(make_context(load_mart_settings(env={}, min_cell=5), KEY)) != base
    assert KEY.decode() not in base


def test_build_marts_still_builds_without_staging_rebuild(built):
    c, counts = built
    settings = load_mart_settings(
        env={}, reference_date=date(2026, 6, 30), min_cell=2, therapist_periods="all", feedback_min_cell_n=5
    )
    assert build_marts(c.con, settings, key=KEY, with_staging=False) == counts
