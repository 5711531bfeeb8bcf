"""Write-back planning without a server: scopes, settings, the dry-run Bundle (pipelines/writeback.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from marts.build import make_context
from marts.settings import load_mart_settings
from pipelines.resources.fhir import FhirClient
from pipelines.settings import SettingsError, load_settings
from pipelines.writeback import LOINC, Writeback, WritebackConfig, escape_token, write_back
from pipelines.writeback_scopes import WritebackError, check_scopes, scope_grants_write
from tests.support.generated_warehouse import KEY, SOURCE, generated_warehouse_file

NAMESPACE = "https://alliance-qi.example.org/fhir"
SCOPES = ("system/Device.cu", "system/Observation.cu", "system/Flag.cu", "system/Task.cu")


@pytest.mark.parametrize(
    ("scope", "rtype", "grants"),
    [
        ("system/Observation.cu", "Observation", True),
        ("system/Observation.cruds", "Observation", True),
        ("system/Observation.write", "Observation", True),
        ("user/*.*", "Flag", True),
        ("system/Observation.rs", "Observation", False),
        ("system/Observation.read", "Observation", False),
        ("system/Observation.c", "Observation", False),  # creates, but cannot update
        ("system/Flag.cu", "Observation", False),
        ("launch", "Observation", False),
    ],
)
def test_scope_grants_write(scope: str, rtype: str, grants: bool) -> None:
    assert scope_grants_write(scope, rtype) is grants


def test_every_written_type_needs_an_explicit_write_scope() -> None:
    check_scopes(SCOPES)
    with pytest.raises(WritebackError, match="Task"):
        check_scopes(SCOPES[:3])
    with pytest.raises(WritebackError):
        check_scopes(("system/*.read",))


def test_sources_file_enables_writeback_only_with_scopes(tmp_path: Path) -> None:
    base = "default_source: s\nsources:\n  s:\n    base_url: http://127.0.0.1:1/fhir\n"
    off = tmp_path / "off.yaml"
    off.write_text(base)
    assert load_settings(off, env={}).source("s").writeback.enabled is False
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "    writeback:\n      enabled: true\n      scopes: [system/Observation.rs]\n")
    with pytest.raises(SettingsError, match="write scopes"):
        load_settings(bad, env={})
    good = tmp_path / "good.yaml"
    good.write_text(base + f"    writeback:\n      enabled: true\n      scopes: [{', '.join(SCOPES)}]\n")
    assert load_settings(good, env={}).source("s").writeback.scopes == list(SCOPES)


def test_token_values_escape_fhir_separators() -> None:
    assert escape_token("qr-1|phq9") == "qr-1\\|phq9"
    assert escape_token("a,b$c\\d") == "a\\,b\\$c\\\\d"


def test_dry_run_writes_one_transaction_bundle_and_no_log(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    warehouse = tmp_path / "w.duckdb"
    shutil.copy(generated_warehouse_file(tmp_path_factory), warehouse)
    out = tmp_path / "bundle.json"
    config = WritebackConfig(SOURCE, NAMESPACE, SCOPES, dry_run_file=out)
    with duckdb.connect(str(warehouse)) as con:
        result = write_back(con, config, make_context(load_mart_settings(env={}), KEY), run_id="dry")
        logged = con.execute("SELECT count(*) FROM ops.writeback_log").fetchone()
        totals = con.execute(
            "SELECT count(*) FROM staging.measure_scores WHERE source = ? AND scale = 'total' AND is_valid "
            "AND score IS NOT NULL AND status IN ('completed', 'amended') AND response_id NOT IN "
            "(SELECT record_key FROM quality.current_quarantine WHERE table_name = 'staging.measure_scores')",
            [SOURCE],
        ).fetchone()
    assert logged == (0,) and result.dry_run_file == out
    bundle = json.loads(out.read_text())
    assert bundle["type"] == "transaction"
    by_type: dict[str, list[dict]] = {}
    for e in bundle["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e)
    assert len(by_type["Device"]) == 1
    assert totals is not None and len(by_type["Observation"]) == totals[0]
    phq9 = next(
        e for e in by_type["Observation"] if e["resource"]["identifier"][0]["value"].endswith("|phq9")
    )
    obs = phq9["resource"]
    assert obs["code"]["coding"][0] == {
        "system": LOINC,
        "code": "44261-6",
        "display": "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]",
    }
    assert obs["status"] in ("final", "amended") and obs["category"][0]["coding"][0]["code"] == "survey"
    response_id = obs["identifier"][0]["value"].split("|")[0]
    assert obs["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{response_id}"}]
    assert obs["identifier"][0]["system"] == NAMESPACE
    assert phq9["request"] == {
        "method": "PUT",
        "url": f"Observation?identifier={NAMESPACE}|{response_id}\\|phq9",
    }
    # Flags: created once (ifNoneExist), authored by the pipeline's Device; a Task per Flag on its focus
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert by_type["Flag"] and len(by_type["Task"]) == len(by_type["Flag"])
    for e in by_type["Flag"]:
        assert e["request"]["method"] == "POST" and e["request"]["ifNoneExist"].startswith("identifier=")
        assert e["resource"]["author"]["reference"] == by_type["Device"][0]["fullUrl"]
    for e in by_type["Task"]:
        t = e["resource"]
        assert (t["status"], t["intent"]) == ("requested", "proposal")
        assert t["focus"]["reference"] in urls and t["for"]["reference"].startswith("Patient/")
        assert t["owner"]["reference"].startswith(("PractitionerRole/", "Practitioner/"))


def test_a_flag_back_on_track_is_set_inactive_and_its_task_cancelled_by_id() -> None:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA staging")
    con.execute(
        "CREATE TABLE staging.practitioner_roles (source VARCHAR, role_id VARCHAR, practitioner_id VARCHAR, "
        "organization_id VARCHAR, active BOOLEAN, role_code VARCHAR)"
    )
    w = Writeback(con, WritebackConfig(SOURCE, NAMESPACE, SCOPES), "r", FhirClient("http://127.0.0.1:9/fhir"))
    ident = "not-on-track.eoc-1"
    flag = {"resourceType": "Flag", "id": "f1", "status": "active", "period": {"start": "2026-05-01"}}
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "focus": {"reference": "Flag/f1"}}
    w.state[("Flag", ident)] = {
        "resource_id": "f1",
        "resource_status": "active",
        "resource": json.dumps(flag),
    }
    w.state[("Task", ident)] = {
        "resource_id": "t1",
        "resource_status": "requested",
        "resource": json.dumps(task),
    }
    # the episode is no longer among those not on track (no rows): its Flag goes inactive, by id
    (planned,) = w.plan_flags([])
    assert (planned.method, planned.url, planned.status) == ("PUT", "Flag/f1", "inactive")
    assert planned.resource["period"]["start"] == "2026-05-01" and "end" in planned.resource["period"]
    w.state[("Flag", ident)]["resource_status"] = "inactive"
    (cancel,) = w.plan_tasks([])
    assert (cancel.method, cancel.url, cancel.resource["status"]) == ("PUT", "Task/t1", "cancelled")
    # nothing else is planned for an active Flag whose Task is open
    w.state[("Flag", ident)]["resource_status"] = "active"
    assert w.plan_tasks([]) == []
