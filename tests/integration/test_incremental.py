"""Incremental correctness end to end against a real FHIR server: after an amended, an
entered-in-error, a new and an updated resource appear on the server, the next run changes exactly
the affected rows from raw to the marts; a run with no changes does no heavy work."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import duckdb
import pytest
import requests

from assets.checks import build_quality_checks
from assets.marts import mart_assets
from assets.raw import build_intake_ledgers_asset, build_raw_assets
from assets.staging import staging_assets
from demo.generator import GeneratorConfig, generate
from demo.loader import load_to_server
from marts.privacy import pseudonym
from pipelines.catalog import load_catalog
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "incremental-test-key-0123456789"
SOURCE = "it"
DERIVED = [*staging_assets, *mart_assets]


def _run(base_url: str, warehouse) -> dict[str, dict[str, Any]]:
    partitions = dg.StaticPartitionsDefinition([SOURCE])
    assets = [*build_raw_assets(partitions), build_intake_ledgers_asset(partitions), *DERIVED]
    result = dg.materialize(
        [*assets, *build_quality_checks(assets)],
        partition_key=SOURCE,
        resources={
            "fhir": FhirSourcesResource.single(name=SOURCE, base_url=base_url, page_size=200),
            "warehouse": WarehouseResource(path=str(warehouse)),
        },
    )
    assert result.success
    out: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    for event in result.get_asset_check_evaluations():
        out[f"check:{event.asset_check_key.name}"] = {k: v.value for k, v in event.metadata.items()}
    return out


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> set[tuple]:
    return set(con.execute(sql).fetchall())


def _put(base_url: str, resource: dict[str, Any]) -> None:
    r = requests.put(
        f"{base_url}/{resource['resourceType']}/{resource['id']}",
        json=resource,
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text[:300]


def test_changes_reach_exactly_the_affected_rows_and_a_quiet_run_skips(tmp_path, fhir_server, monkeypatch):
    monkeypatch.setenv("ALLIANCE_QI_PSEUDONYM_KEY", KEY)
    clinic = generate(GeneratorConfig(patients=12, seed=5, mess_rate=0.0))
    load_to_server(fhir_server.base_url, clinic)
    base, warehouse = fhir_server.base_url, tmp_path / "warehouse.duckdb"
    first = _run(base, warehouse)
    assert all(not m.get("skipped", False) for m in first.values())
    # Every table the run wrote is declared once and is an asset (quality tables: the checks' outputs).
    catalog = load_catalog()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        written = {
            f"{schema}.{name}"
            for schema, name in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN ('raw', 'staging', 'marts', 'quality')"
            ).fetchall()
        }
    assert written == {t.name for t in catalog.all_tables()}
    materialized = {k.replace("/", ".") for k in first if not k.startswith("check:")}
    assert {t for t in written if not t.startswith("quality.")} <= materialized
    assert {t for t in written if t.startswith("quality.")} <= set(catalog.writers)

    latest = clinic.latest()
    qrs = [r for (t, _), r in latest.items() if t == "QuestionnaireResponse"]
    wai = next(
        r for r in qrs if r["id"].endswith("-wai") and r["subject"]["reference"] == "Patient/pat-00002"
    )
    phq = next(
        r for r in qrs if r["id"].endswith("-phq9") and r["subject"]["reference"] == "Patient/pat-00003"
    )
    srs = next(
        r for r in qrs if r["id"].endswith("-srs") and r["subject"]["reference"] == "Patient/pat-00004"
    )
    affected = {"pat-00002", "pat-00003", "pat-00004"}

    with duckdb.connect(str(warehouse), read_only=True) as con:
        scores_before = _rows(con, "SELECT response_id, scale, score FROM staging.measure_scores")
        sessions_before = _rows(con, "SELECT * FROM marts.alliance_sessions")
        episodes_before = _rows(con, "SELECT * FROM marts.episode_outcomes")
        wai_total_before = con.execute(
            "SELECT score FROM staging.measure_scores WHERE response_id = ? AND scale = 'total'", [wai["id"]]
        ).fetchall()[0][0]

    # amended: the patient changes item 1 of a WAI-SR to "Always" (5)
    amended = copy.deepcopy(wai)
    amended["status"] = "amended"
    first_item = amended["item"][0]
    old_code = int(first_item["answer"][0]["valueCoding"]["code"])
    first_item["answer"][0]["valueCoding"].update(code="5", display="Always")
    _put(base, amended)
    # entered-in-error: a PHQ-9 withdrawn
    withdrawn = copy.deepcopy(phq)
    withdrawn["status"] = "entered-in-error"
    _put(base, withdrawn)
    # new: an SRS re-entered later the same session with other answers (the newest one counts)
    new = copy.deepcopy(srs)
    new["id"] = srs["id"] + "-reentered"
    new["authored"] = (datetime.fromisoformat(srs["authored"]) + timedelta(minutes=10)).isoformat()
    for item in new["item"]:
        item["answer"] = [{"valueInteger": 2}]
    _put(base, new)
    # updated: an unaffected patient's contact details (nothing analytic changes)
    patient = copy.deepcopy(latest[("Patient", "pat-00005")])
    patient["telecom"] = [{"system": "phone", "value": "555-0100"}]
    _put(base, patient)

    second = _run(base, warehouse)
    new_versions = sum(m.get("new_versions", 0) for k, m in second.items() if k.startswith("raw/"))
    assert new_versions == 4
    with duckdb.connect(str(warehouse), read_only=True) as con:
        scores_after = _rows(con, "SELECT response_id, scale, score FROM staging.measure_scores")
        changed = {r[0] for r in scores_before ^ scores_after}
        assert changed == {wai["id"], phq["id"], new["id"]}
        wai_total = con.execute(
            "SELECT score FROM staging.measure_scores WHERE response_id = ? AND scale = 'total'", [wai["id"]]
        ).fetchall()[0][0]
        assert wai_total == wai_total_before - old_code + 5
        assert con.execute(
            "SELECT status FROM staging.excluded_responses WHERE response_id = ?", [phq["id"]]
        ).fetchall() == [("entered-in-error",)]
        keys = {pseudonym(KEY.encode(), "patient", SOURCE, p) for p in affected}
        sessions_after = _rows(con, "SELECT * FROM marts.alliance_sessions")
        episodes_after = _rows(con, "SELECT * FROM marts.episode_outcomes")
        cols = [d[0] for d in con.execute("SELECT * FROM marts.alliance_sessions LIMIT 0").description]
        ecols = [d[0] for d in con.execute("SELECT * FROM marts.episode_outcomes LIMIT 0").description]
    p_idx, e_idx = cols.index("patient_key"), ecols.index("patient_key")
    # the marts changed, and only in rows of the three affected patients
    assert sessions_before != sessions_after and episodes_before != episodes_after
    assert {r[p_idx] for r in sessions_before ^ sessions_after} <= keys
    assert {r[e_idx] for r in episodes_before ^ episodes_after} <= keys

    # nothing new: no new versions, and every derived step keeps its tables
    third = _run(base, warehouse)
    assert sum(m.get("new_versions", 0) for k, m in third.items() if k.startswith("raw/")) == 0
    derived = {k: m for k, m in third.items() if not k.startswith(("raw/", "check:"))}
    rebuilt = {k for k, m in derived.items() if not m["skipped"]}
    # The raw intake suite re-checks every pull (fetch reconciliation), which adds this run's data-quality
    # results, so only the mart that reports the check summary is rebuilt (report_data_quality reads
    # quality.check_results); qi_monthly's pass rate reads the quarantine, which did not change.
    assert len(derived) > 15 and rebuilt == {"marts/report_data_quality"}, rebuilt
    # quality suites past the raw layer reuse the previous verdicts instead of re-running GX
    checks = {k: m for k, m in third.items() if k.startswith("check:ms_")}
    assert checks and all("reused_from_run" in m for m in checks.values())
    # ... and so does the raw responses suite: the pull landed nothing, its one table is unchanged
    raw_qr = {k: m for k, m in third.items() if k.startswith("check:raw_qr_")}
    assert raw_qr and all("reused_from_run" in m for m in raw_qr.values())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert _rows(con, "SELECT * FROM marts.alliance_sessions") == sessions_after
