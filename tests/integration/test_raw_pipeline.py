"""End to end raw layer: real FHIR server process over HTTP -> Dagster raw assets -> DuckDB file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.raw import build_raw_assets
from assets.staging import answer_assets
from demo.generator import GeneratorConfig, generate
from demo.loader import load_to_server, write_ndjson
from pipelines.extract import missing_canonicals
from pipelines.landing import landing_path
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import table_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clinic():
    return generate(GeneratorConfig(patients=25, seed=7, mess_rate=0.05))


def _run(source: FhirSourcesResource, warehouse: Path) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [*build_raw_assets(None), *answer_assets],
        resources={"fhir": source, "warehouse": WarehouseResource(path=str(warehouse))},
    )
    assert result.success
    return result


def _ids(con, resource_type: str) -> set[str]:
    t = table_for(resource_type)
    landed = {r[0] for r in con.execute(f"SELECT DISTINCT id FROM raw.{t} WHERE source = 'it'").fetchall()}
    rejected = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT id FROM raw.rejected WHERE resource_type = ? AND source = 'it'", [resource_type]
        ).fetchall()
    }
    return landed | rejected


def _fetch_log(con, run_id: str) -> list[tuple]:
    return con.execute(
        """SELECT resource_type, fetched, landed, new_versions, unchanged, rejected, duplicates
           FROM raw.fetch_log WHERE run_id = ?""",
        [run_id],
    ).fetchall()


@pytest.mark.slow  # a FHIR server process
def test_raw_assets_land_every_resource_reconcile_and_rerun_idempotently(tmp_path, fhir_server, clinic):
    phase0 = dataclasses.replace(clinic, versions=[clinic.versions[0]])
    load_to_server(fhir_server.base_url, phase0)
    wh = tmp_path / "warehouse.duckdb"
    source = FhirSourcesResource.single(name="it", base_url=fhir_server.base_url, page_size=100)

    first = _run(source, wh)
    con = duckdb.connect(str(wh), read_only=True)
    try:
        counts = clinic.manifest["counts"]
        for rtype in RESOURCE_TYPES:
            assert _ids(con, rtype) == {r["id"] for r in clinic.of_type(rtype, phase=0)}, rtype
            assert len(_ids(con, rtype)) == counts[rtype]
        # every pull reconciles: fetched = landed + rejected + duplicates
        log1 = _fetch_log(con, first.run_id)
        assert len(log1) == len(RESOURCE_TYPES)
        assert all(f == landed + rej + dup for _, f, landed, _, _, rej, dup in log1)
        rejected = {
            (r[0], r[1]) for r in con.execute("SELECT resource_type, id FROM raw.rejected").fetchall()
        }
        planted_bad = {
            (m["resourceType"], m["id"])
            for m in clinic.manifest["mess"]
            if m["kind"] == "invalid_structure" and str(m.get("version", "1")) == "1"
        }
        assert planted_bad and planted_bad <= rejected
        planted_ok = {
            (m["resourceType"], m["id"])
            for m in clinic.manifest["mess"]
            if m["kind"] == "invalid_unused_element"
        }
        assert planted_ok and not (planted_ok & rejected)
        # non-blocking findings of those resources are still recorded
        found = {
            (r[0], r[1])
            for r in con.execute("SELECT resource_type, id FROM raw.findings WHERE NOT blocking").fetchall()
        }
        assert planted_ok & found
        # referenced questionnaires: everything resolves except the planted unknown form
        unresolved = missing_canonicals(con, "it")
        assert unresolved and all("unknown-form" in c for c in unresolved)
        status = {r[0] for r in con.execute("SELECT status FROM raw.canonical_resolution").fetchall()}
        assert status == {"not_found"}
        # staging: one row per landed response; every answer row belongs to one of them
        n_resp = con.execute("SELECT count(DISTINCT id) FROM raw.questionnaire_response").fetchall()[0][0]
        assert con.execute("SELECT count(*) FROM staging.questionnaire_responses").fetchall()[0][0] == n_resp
        assert con.execute("SELECT count(*) FROM staging.questionnaire_answers").fetchall()[0][0] > n_resp
        # every generated form resolved: the four scored PHQ-9/GAD-7 score sources all present
        sources = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT score_source FROM staging.questionnaire_answer_scores"
            ).fetchall()
        }
        assert {
            "ordinalValue",
            "itemWeight",
            "questionnaire-ordinalValue",
            "valueset:ordinalValue",
        } <= sources
        rows_before = {
            t: con.execute(f"SELECT count(*) FROM raw.{table_for(t)}").fetchall()[0][0]
            for t in RESOURCE_TYPES
        }
        rejected_before = con.execute("SELECT count(*) FROM raw.rejected").fetchall()[0][0]
    finally:
        con.close()

    # Same server, no changes: nothing new lands (the overlap window re-reads, landing skips).
    second = _run(source, wh)
    con = duckdb.connect(str(wh), read_only=True)
    try:
        log2 = _fetch_log(con, second.run_id)
        assert sum(r[3] for r in log2) == 0
        assert all(r[1] == r[2] + r[5] + r[6] for r in log2)
        for t in RESOURCE_TYPES:
            assert con.execute(f"SELECT count(*) FROM raw.{table_for(t)}").fetchall()[0][0] == rows_before[t]
        assert con.execute("SELECT count(*) FROM raw.rejected").fetchall()[0][0] == rejected_before
    finally:
        con.close()

    # Amended / entered-in-error versions appear on the server: the next run lands exactly those.
    phase1 = dataclasses.replace(clinic, versions=[clinic.versions[1]])
    load_to_server(fhir_server.base_url, phase1)
    third = _run(source, wh)
    con = duckdb.connect(str(wh), read_only=True)
    try:
        updated_ids = {r["id"] for r in clinic.versions[1]}
        log3 = {r[0]: r for r in _fetch_log(con, third.run_id)}
        qr = log3["QuestionnaireResponse"]
        assert qr[3] + qr[5] >= len(updated_ids) > 0  # new versions (or rejected new versions)
        versions = dict(
            con.execute(
                """SELECT id, list(version_id ORDER BY version_id) FROM raw.questionnaire_response
               WHERE id IN (SELECT unnest(?)) GROUP BY id""",
                [sorted(updated_ids)],
            ).fetchall()
        )
        amended = [m["id"] for m in clinic.manifest["mess"] if m["kind"] == "amended"]
        assert amended and all(versions[i] == ["1", "2"] for i in amended if i in versions)
        for t in RESOURCE_TYPES:
            if t != "QuestionnaireResponse":
                assert log3[t][3] == 0, t
    finally:
        con.close()


def test_folder_source_lands_every_ndjson_line(tmp_path, clinic):
    folder = tmp_path / "ndjson"
    write_ndjson(folder, clinic)
    with (folder / "Patient.ndjson").open("a") as fh:
        fh.write('{"resourceType": "Patient", "id": \n')  # a truncated line
    wh = tmp_path / "w.duckdb"
    source = FhirSourcesResource.single(name="it", kind="folder", folder=str(folder))
    _run(source, wh)
    con = duckdb.connect(str(wh), read_only=True)
    try:
        lines = sum(
            1
            for p in folder.glob("*.ndjson")
            if p.stem in RESOURCE_TYPES
            for ln in p.read_text().splitlines()
            if ln.strip()
        )
        landed = sum(
            con.execute(f"SELECT count(*) FROM raw.{table_for(t)}").fetchall()[0][0] for t in RESOURCE_TYPES
        )
        rejected = con.execute("SELECT count(*) FROM raw.rejected").fetchall()[0][0]
        assert landed + rejected == lines
        bad = con.execute("SELECT reason, resource_text FROM raw.rejected WHERE id IS NULL").fetchall()
        assert len(bad) == 1 and bad[0][0].startswith("unparseable") and '"id":' in bad[0][1]
        # both versions of amended responses are kept
        two = con.execute("""SELECT count(*) FROM (SELECT id FROM raw.questionnaire_response
                             GROUP BY id HAVING count(*) = 2)""").fetchall()[0][0]
        assert two > 0
        before = {
            t: con.execute(f"SELECT count(*) FROM raw.{table_for(t)}").fetchall()[0][0]
            for t in RESOURCE_TYPES
        }
    finally:
        con.close()

    # A second pull of the unchanged folder reads no file again; a changed file is read again.
    second = _run(source, wh)
    fetched = {
        e.asset_key.path[-1]: e.metadata["fetched"].value
        for e in (ev.event_specific_data.materialization for ev in second.get_asset_materialization_events())
        if e.asset_key.path[0] == "raw"
    }
    assert fetched and set(fetched.values()) == {0}
    with (folder / "Patient.ndjson").open("a") as fh:
        fh.write('{"resourceType": "Patient", "id": "late-arrival", "gender": "female"}\n')
    third = _run(source, wh)
    patient_meta = next(
        ev.event_specific_data.materialization.metadata
        for ev in third.get_asset_materialization_events()
        if ev.event_specific_data.materialization.asset_key.path == ["raw", "patient"]
    )
    assert patient_meta["new_versions"].value == 1 and patient_meta["unchanged"].value == before["Patient"]
    with duckdb.connect(str(wh), read_only=True) as con:
        for t in RESOURCE_TYPES:
            n = con.execute(f"SELECT count(*) FROM raw.{table_for(t)}").fetchall()[0][0]
            assert n == before[t] + (1 if t == "Patient" else 0), t


@pytest.mark.slow  # a FHIR server process
def test_bulk_source_round_trip_matches_rest(tmp_path, fhir_server, clinic):
    load_to_server(fhir_server.base_url, clinic)
    rest_wh, bulk_wh = tmp_path / "rest.duckdb", tmp_path / "bulk.duckdb"
    _run(FhirSourcesResource.single(name="it", base_url=fhir_server.base_url), rest_wh)
    _run(
        FhirSourcesResource.single(
            name="it", kind="bulk", base_url=fhir_server.base_url, landing_dir=str(tmp_path / "landing")
        ),
        bulk_wh,
    )
    query = "SELECT resource_type, id, version_id FROM raw.{t} ORDER BY id"
    with duckdb.connect(str(rest_wh), read_only=True) as a, duckdb.connect(str(bulk_wh), read_only=True) as b:
        for t in RESOURCE_TYPES:
            q = query.format(t=table_for(t))
            assert a.execute(q).fetchall() == b.execute(q).fetchall(), t
    # Bulk export state lives in the source's landing file: the job was deleted and its state cleared.
    for t in RESOURCE_TYPES:
        with duckdb.connect(str(landing_path(tmp_path / "bulk.landing", "it", t)), read_only=True) as land:
            assert land.execute("SELECT count(*) FROM raw.bulk_jobs").fetchall()[0][0] == 0, t
    with duckdb.connect(str(bulk_wh), read_only=True) as b:
        assert {r[0] for r in b.execute("SELECT DISTINCT pull_mode FROM raw.fetch_log").fetchall()} == {
            "bulk_export"
        }
