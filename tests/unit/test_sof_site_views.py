"""Site views (fhir_mappings/views/site.py): a ViewDefinition file in ALLIANCE_QI_VIEWS_DIR becomes a
staging table and a Dagster asset with lineage to its raw table; a broken file fails loading."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from assets.factory import asset_key, step_asset
from demo.generator import GeneratorConfig, generate
from fhir_mappings.views import ViewDefinitionError, compile_view
from fhir_mappings.views.site import build_site_view, load_site_view, load_site_views, site_view_steps
from pipelines.catalog import Catalog, load_catalog
from pipelines.warehouse import ensure_raw_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "views"
EXAMPLE = EXAMPLES / "encounter_participants.json"


def _land(con: duckdb.DuckDBPyConnection, table: str, source: str, res: dict[str, Any], version: str) -> None:
    con.execute(
        f"""INSERT INTO raw.{table} (source, resource_type, id, version_id, version_from_server,
               last_updated, content_sha256, resource, origin, run_id, fetched_at)
            VALUES (?, ?, ?, ?, true, NULL, 'h', ?::JSON, NULL, 'run', now())""",
        [source, res["resourceType"], res["id"], version, json.dumps(res)],
    )


@pytest.fixture(scope="module")
def encounters() -> list[dict[str, Any]]:
    data = generate(GeneratorConfig(patients=12, seed=11, mess_rate=0.05))
    return [r for r in data.latest().values() if r["resourceType"] == "Encounter"]


def test_the_example_view_builds_its_staging_table_from_current_versions(encounters):
    con = duckdb.connect()
    ensure_raw_schema(con)
    for res in encounters:
        _land(con, "encounter", "clinic_a", res, "2")
        _land(con, "encounter", "clinic_b", res, "1")
    # an older version of one encounter, with an extra participant, must not be read
    old = {**encounters[0], "participant": [*encounters[0].get("participant", []), {"type": []}]}
    _land(con, "encounter", "clinic_a", old, "1")

    view = load_site_view(EXAMPLE)
    assert (view.name, view.table, view.raw_table) == (
        "encounter_participants",
        "staging.view_encounter_participants",
        "raw.encounter",
    )
    counts = build_site_view(con, view)
    expected = 2 * sum(len(r.get("participant", [])) for r in encounters)
    assert expected > 0
    assert counts == {"rows.staging.view_encounter_participants": expected}

    columns = [r[0] for r in con.execute("DESCRIBE staging.view_encounter_participants").fetchall()]
    assert columns == [
        "source",
        "encounter_id",
        "patient_id",
        "status",
        "period_start",
        "participant_index",
        "role_code",
        "practitioner_id",
        "is_primary_performer",
    ]
    # the same rows as the compiler's own query over the current versions of one source
    con.execute("CREATE TEMP TABLE a AS SELECT id, resource FROM raw.encounter WHERE source = 'clinic_b'")
    direct = con.execute(compile_view(view.definition, source_relation="a")).fetchall()
    table = con.execute(
        "SELECT * EXCLUDE (source) FROM staging.view_encounter_participants WHERE source = 'clinic_a'"
    ).fetchall()
    assert sorted(map(str, table)) == sorted(map(str, direct))
    primary = con.execute(
        "SELECT count(*) FROM staging.view_encounter_participants WHERE is_primary_performer"
    ).fetchall()[0][0]
    pprf = sum(
        1
        for r in encounters
        for part in r.get("participant", [])
        if any(c.get("code") == "PPRF" for t in part.get("type", []) for c in t.get("coding", []))
    )
    assert primary == 2 * pprf
    # the work relations are gone, and a rerun gives the same table
    assert build_site_view(con, view) == counts
    temp = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert ("site_view_source",) not in temp


def _write(folder: Path, name: str, view: Any) -> Path:
    path = folder / name
    path.write_text(view if isinstance(view, str) else json.dumps(view))
    return path


def _view(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ViewDefinition",
        "name": "patient_genders",
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id"}, {"name": "gender", "path": "gender"}]}],
        **extra,
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        (_view(name="Patient Genders"), "`name` must be a lower-case identifier"),
        (_view(name=None), "`name` must be a lower-case identifier"),
        (_view(resource="Observation"), "resource Observation is not landed by this pipeline"),
        (_view(select=[{"column": [{"name": "x", "path": "name.iif(true)"}]}]), "iif"),
        (_view(select=[{"column": [{"name": "source", "path": "id"}]}]), "column 'source' is reserved"),
        (_view(select=[{"forEch": "name", "column": [{"name": "x", "path": "family"}]}]), "unknown keys"),
        ({**_view(), "resourceType": "Patient"}, "not ViewDefinition"),
    ],
)
def test_a_broken_file_fails_loading_with_its_name_and_the_reason(tmp_path, content, reason):
    _write(tmp_path, "a_good.json", _view(name="good_one"))
    bad = _write(tmp_path, "broken.json", content)
    with pytest.raises(ViewDefinitionError) as err:
        load_site_views(tmp_path)
    assert str(bad) in str(err.value)
    assert reason in str(err.value)


def test_two_files_with_one_name_and_a_missing_folder_fail(tmp_path):
    _write(tmp_path, "a.json", _view())
    _write(tmp_path, "b.json", _view())
    with pytest.raises(ViewDefinitionError, match=r"b\.json: view name 'patient_genders' is already used"):
        load_site_views(tmp_path)
    with pytest.raises(ViewDefinitionError, match="is not a folder"):
        load_site_views(tmp_path / "missing")
    assert load_site_views(None) == ()


def test_each_view_is_a_catalog_step_and_an_asset_with_lineage_to_its_raw_table():
    base = load_catalog()
    steps = site_view_steps(EXAMPLES)
    assert [s.name for s in steps] == ["staging.view_encounter_participants"]
    catalog = Catalog(base.tables, (*base.steps, *steps), base.writers)
    step = catalog.step("staging.view_encounter_participants")
    assert step.inputs == ("raw.encounter",)
    assert catalog.table("staging.view_encounter_participants").grain.startswith("One row per")
    assets = step_asset(step, catalog)
    key = asset_key("staging.view_encounter_participants")
    assert assets.keys == {key}
    assert assets.asset_deps[key] == {asset_key("raw.encounter")}
    # a changed definition changes the build fingerprint, so the table is rebuilt
    view = load_site_view(EXAMPLE)
    assert step.fingerprint_text(None) == view.fingerprint()
    changed = json.loads(EXAMPLE.read_text())
    changed["select"][0]["column"].pop()
    assert dataclasses.replace(view, definition=changed).fingerprint() != view.fingerprint()


def _run_python(code: str, views_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALLIANCE_QI_VIEWS_DIR": str(views_dir)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_setting_adds_the_folder_views_to_the_dagster_definitions(tmp_path):
    code = (
        "from pipelines.definitions import defs\n"
        "import dagster as dg\n"
        "key = dg.AssetKey(['staging', 'view_encounter_participants'])\n"
        "graph = defs.resolve_asset_graph()\n"
        "print(sorted('/'.join(k.path) for k in graph.get(key).parent_keys))\n"
    )
    ok = _run_python(code, EXAMPLES)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1] == "['raw/encounter']"

    _write(tmp_path, "broken.json", _view(resource="Condition"))
    failed = _run_python("import pipelines.definitions", tmp_path)
    assert failed.returncode != 0
    assert "broken.json: resource Condition is not landed by this pipeline" in failed.stderr
