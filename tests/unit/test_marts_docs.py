"""docs/marts.md documents every column of every mart, and the Dagster assets are wired as promised."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.marts import mart_assets
from assets.staging import clinical_assets
from marts.build import MART_NAMES, STAGING_BUILT
from tests.support.marts_clinic import KEY, Clinic

DOCS = Path(__file__).resolve().parents[2] / "docs" / "marts.md"


def _documented(mart: str) -> list[str]:
    text = DOCS.read_text()
    match = re.search(rf"^## marts\.{mart}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/marts.md has no section for marts.{mart}"
    return re.findall(r"^\| `([a-z0-9_]+)` \|", match.group(1), re.M)


@pytest.fixture(scope="module")
def built() -> Clinic:
    c = Clinic()
    c.patient("p1")
    c.encounter("e1", "p1", "2026-01-01")
    c.wai("e1", "p1", 4.0)
    c.build()
    return c


@pytest.mark.parametrize("mart", MART_NAMES)
def test_every_mart_column_is_documented_in_order(built, mart):
    columns = [r[0] for r in built.rows(f"DESCRIBE marts.{mart}")]
    assert _documented(mart) == columns


def test_assets_have_stable_keys_groups_and_one_row_per_descriptions():
    keys = {k.to_user_string(): a for a in (*clinical_assets, *mart_assets) for k in a.keys}
    assert set(keys) == {f"staging/{n}" for n in STAGING_BUILT} | {f"marts/{n}" for n in MART_NAMES}
    for key, asset in keys.items():
        spec = next(iter(asset.specs))
        assert spec.group_name == key.split("/")[0]
        assert (spec.description or "").startswith("One row per"), key
    deps = {d.asset_key.to_user_string() for d in next(iter(keys["staging/session_measures"].specs)).deps}
    assert deps == {"staging/sessions", "staging/measure_scores"}
    outcome_deps = {
        d.asset_key.to_user_string() for d in next(iter(keys["marts/episode_outcomes"].specs)).deps
    }
    assert "marts/alliance_sessions" in outcome_deps


def test_assets_materialise_on_a_warehouse_file(tmp_path, monkeypatch, built):
    path = tmp_path / "warehouse.duckdb"
    # copy the tiny clinic's raw layer and scores into a file warehouse
    built.con.execute(f"ATTACH '{path}' AS f")
    for schema, table in built.rows(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = 'memory' AND table_schema IN ('raw', 'staging') AND table_type = 'BASE TABLE' "
        "AND (table_schema = 'raw' OR table_name = 'measure_scores')"
    ):
        built.con.execute(f"CREATE SCHEMA IF NOT EXISTS f.{schema}")
        built.con.execute(f"CREATE TABLE f.{schema}.{table} AS SELECT * FROM memory.{schema}.{table}")
    built.con.execute("DETACH f")
    monkeypatch.setenv("ALLIANCE_QI_PSEUDONYM_KEY", KEY.decode())
    monkeypatch.setenv("ALLIANCE_QI_MART_REFERENCE_DATE", "2026-12-31")
    from pipelines.resources.fhir_source import WarehouseResource

    result = dg.materialize(
        [*clinical_assets, *mart_assets], resources={"warehouse": WarehouseResource(path=str(path))}
    )
    assert result.success
    counts = {
        m.asset_key.to_user_string(): m.metadata["dagster/row_count"].value
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    assert counts["staging/sessions"] == 1 and counts["marts/alliance_sessions"] == 1
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT wai_sr_mean FROM marts.alliance_sessions").fetchall() == [(4.0,)]
        assert con.execute("SELECT count(*) FROM marts.alliance_associations").fetchall()[0][0] > 0
    finally:
        con.close()
