"""End to end data quality: a generated clinic with planted mess on a real FHIR server -> Dagster raw,
staging and scoring assets with every suite as asset checks -> every planted defect accounted for
in quality.check_results (samples) or quality.quarantine, and every reconciliation holds."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from assets.checks import build_quality_checks
from assets.raw import EXPORT_CHECK, build_raw_assets
from assets.staging import answer_assets
from demo.generator import MESS_KINDS, GeneratorConfig, generate
from demo.loader import load_to_server
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource
from quality_checks.runner import SAMPLE_SIZE
from quality_checks.suite import load_suites
from quality_checks.summary import summary_frame, summary_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts FHIR server processes

# Where each kind of planted defect must show up: (check id, 'sample' or 'quarantine').
ACCOUNTED_BY: dict[str, tuple[str, str]] = {
    "invalid_structure": ("raw_rejected_resources", "sample"),
    "invalid_unused_element": ("raw_findings_on_unused_elements", "sample"),
    "entered_in_error": ("ms_withdrawn_responses", "sample"),
    "amended": ("ms_amended_responses", "sample"),
    "duplicate_submission": ("ms_no_duplicate_submission", "quarantine"),
    "missing_items": ("ms_complete_responses", "sample"),
    "unknown_questionnaire": ("ms_unmapped_responses", "sample"),
    "total_mismatch": ("ms_reported_total_matches", "sample"),
    "in_progress": ("ms_unfinished_responses", "sample"),
    "stopped": ("ms_unfinished_responses", "sample"),
}


def test_every_planted_defect_is_caught_and_accounted_for(tmp_path, fhir_server):
    assert set(ACCOUNTED_BY) == set(MESS_KINDS)
    # Small enough that every listing check's offending records fit in its 20-key sample.
    clinic = generate(GeneratorConfig(patients=20, seed=7, mess_rate=0.01))
    assert {m["kind"] for m in clinic.manifest["mess"]} == set(MESS_KINDS)
    load_to_server(fhir_server.base_url, clinic)  # both phases: amendments are real version 2s
    wh = tmp_path / "warehouse.duckdb"
    # raw assets partitioned by source, as in the code location
    raw = build_raw_assets(dg.StaticPartitionsDefinition(["it"]))
    assets = [*raw, *answer_assets]
    checks = build_quality_checks(assets)
    result = dg.materialize(
        [*assets, *checks],
        partition_key="it",
        resources={
            "fhir": FhirSourcesResource.single(name="it", base_url=fhir_server.base_url, page_size=200),
            "warehouse": WarehouseResource(path=str(wh), landing_dir=str(tmp_path / "landing")),
        },
    )
    assert result.success  # planted mess is contained or annotated: nothing blocks

    # the demo shows the checks in Dagster: one evaluation per check of every pipeline suite
    evaluated = {(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()}
    expected = {
        ("/".join(s.asset), c.id) for s in load_suites() if not s.name.startswith("mart_") for c in s.checks
    }
    # and each raw asset's own check that its Bulk export (if any) reported no errors
    expected |= {(a.key.to_user_string(), EXPORT_CHECK) for a in raw}
    assert evaluated == expected

    con = duckdb.connect(str(wh), read_only=True)
    try:
        results = {
            r[0]: {"success": r[1], "outcome": r[2], "unexpected": r[3], "samples": json.loads(r[4])}
            for r in con.execute(
                """SELECT expectation_id, success, outcome, unexpected_count, sample_keys
                   FROM quality.check_results WHERE run_id = ?""",
                [result.run_id],
            ).fetchall()
        }
        quarantine: dict[str, set[str]] = {}
        for check_id, key in con.execute(
            "SELECT expectation_id, record_key FROM quality.current_quarantine"
        ).fetchall():
            quarantine.setdefault(check_id, set()).add(key)
        scored = {
            r[0] for r in con.execute("SELECT DISTINCT response_id FROM staging.measure_scores").fetchall()
        }
        frame = summary_frame(con)
        text = summary_text(con)
    finally:
        con.close()

    # reconciliation across layers holds on the demo data
    for check_id in ("raw_pull_reconciles", "stg_responses_reconcile_raw", "ms_responses_reconcile"):
        assert results[check_id]["outcome"] == "passed", check_id
    # nothing blocks; every ERROR failure was contained by quarantine
    assert {r["outcome"] for r in results.values()} <= {"passed", "warning", "contained"}

    missing = []
    for mess in clinic.manifest["mess"]:
        check_id, where = ACCOUNTED_BY[mess["kind"]]
        if where == "quarantine":
            found = mess["id"] in quarantine.get(check_id, set())
        else:
            res = results[check_id]
            assert res["unexpected"] <= SAMPLE_SIZE, (check_id, "sample cannot hold every record")
            found = any(mess["id"] in key.split("/") for key in res["samples"])
        if not found:
            missing.append((mess["kind"], mess["resourceType"], mess["id"], check_id))
    assert missing == []

    # the later duplicate is quarantined, the first submission kept
    for mess in clinic.manifest["mess"]:
        if mess["kind"] == "duplicate_submission":
            assert mess["id"].removesuffix("-dup") not in quarantine["ms_no_duplicate_submission"]
    # rejected patients and encounters leave orphans, which are quarantined, not dropped
    assert quarantine.get("ms_subject_exists") or quarantine.get("ms_encounter_exists")
    assert set().union(*quarantine.values()) <= scored

    # the summary counts the suites' checks (quality.check_results); export_complete is Dagster's own
    assert int(frame["checks_run"].sum()) == len({e for e in expected if e[1] != EXPORT_CHECK})
    assert "raw.rejected" in text and "ms_no_duplicate_submission" in text
