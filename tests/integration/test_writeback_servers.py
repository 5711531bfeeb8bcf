"""The pull and the write-back against two independent FHIR servers: sekmet-fhir and @medplum/fhir-router
4.5.2 (in memory, behind tests/servers/medplum/server.mjs).

On each: the pull lands every generated resource; the first write-back, with a server error on its
second transaction Bundle (through the fault proxy), creates everything else and logs that Bundle's
entries as failed; the next run creates exactly those; a run with nothing new writes nothing; an
amended and an entered-in-error response, pulled again, update exactly their two Observations.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests

from demo.generator import GeneratorConfig, generate
from demo.loader import load_to_server
from demo.server import running_server
from fhir_mappings.flatten import build_questionnaire_answers
from fhir_mappings.questionnaires import build_questionnaire_tables
from fhir_mappings.scoring import build_measure_scores
from marts.build import STAGING_BUILT, build_mart, build_staging, make_context, prepare_marts
from marts.feedback import NOT_ON_TRACK, feedback_rows
from marts.settings import load_mart_settings
from pipelines.extract import SourceSpec, extract_resource_type
from pipelines.resources.fhir import FhirClient, RetryPolicy
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import ensure_raw_schema
from pipelines.writeback import WritebackConfig, write_back
from quality_checks.structural import StructuralValidator
from tests.faults.proxy import Reply, running_proxy
from tests.support.medplum import running_medplum

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = b"writeback-test-key-0123456789abcdef"
SOURCE = "demo"
NAMESPACE = "https://alliance-qi.example.org/fhir"
SCOPES = ("system/Device.cu", "system/Observation.cu", "system/Flag.cu", "system/Task.cu")


@dataclass(frozen=True)
class Server:
    """A running server and how the test uses it."""

    name: str
    base_url: str
    batch: int  # entries per transaction Bundle
    patients: int
    instruments: tuple[str, ...] | None  # written instruments (None: all)


@pytest.fixture(params=["sekmet", "medplum"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """Each server. medplum runs a transaction with conditional entries under strict isolation, which
    it allows for at most 8 entries, and its in-memory conditional searches take ~0.1 s an entry
    (measured), so it gets a smaller clinic and the outcome measures only."""
    if request.param == "sekmet":
        with running_server(tmp_path / "sekmet") as s:
            yield Server("sekmet", s.base_url, 50, 24, None)
    else:
        with running_medplum() as m:
            yield Server("medplum", m.base_url, 8, 10, ("phq9", "gad7"))


def _pull_and_build(con: duckdb.DuckDBPyConnection, base_url: str, run_id: str) -> None:
    client = FhirClient(base_url, page_size=200)
    spec = SourceSpec(name=SOURCE, kind="rest")
    validator = StructuralValidator()
    for rtype in RESOURCE_TYPES:
        extract_resource_type(con, spec, client, rtype, run_id, validator)
    build_questionnaire_answers(con)
    build_questionnaire_tables(con)
    build_measure_scores(con)
    ctx = make_context(load_mart_settings(env={}), KEY)
    prepare_marts(con, ctx)
    for name in STAGING_BUILT:
        build_staging(con, name, ctx, prepared=True)
    build_mart(con, "alliance_sessions", ctx, prepared=True)


def _log(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[Any, ...]]:
    return con.execute(
        "SELECT resource_type, identifier, outcome, http_status, resource_id FROM ops.writeback_log "
        "WHERE run_id = ? ORDER BY resource_type, identifier",
        [run_id],
    ).fetchall()


def _count(base_url: str, resource_type: str) -> int:
    return sum(1 for _ in FhirClient(base_url, page_size=200).search(resource_type))


def test_pull_and_writeback_on_both_servers(server: Server, tmp_path: Path) -> None:
    name, base_url, batch = server.name, server.base_url, server.batch
    data = generate(GeneratorConfig(patients=server.patients, seed=7, mess_rate=0))
    load_to_server(base_url, data, batch_size=50)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ensure_raw_schema(con)
    _pull_and_build(con, base_url, "pull-1")
    responses = {rid for (rtype, rid) in data.latest() if rtype == "QuestionnaireResponse"}
    pulled = {r for (r,) in con.execute("SELECT DISTINCT id FROM raw.questionnaire_response").fetchall()}
    assert pulled == responses, f"{name}: the pull must land every QuestionnaireResponse"

    expected_obs = {
        f"{rid}|{inst}"
        for rid, inst in con.execute(
            "SELECT response_id, instrument FROM staging.measure_scores "
            "WHERE scale = 'total' AND is_valid AND score IS NOT NULL AND status IN ('completed', 'amended')"
        ).fetchall()
        if server.instruments is None or inst in server.instruments
    }
    ctx = make_context(load_mart_settings(env={}), KEY)
    rows, _ = feedback_rows(con, ctx)
    expected_flags = sum(r["flag"] == NOT_ON_TRACK for r in rows) + sum(
        r["alliance_drop_alert"] for r in rows
    )
    assert len(expected_obs) > 3 * batch and expected_flags > 0
    config = WritebackConfig(SOURCE, NAMESPACE, SCOPES, batch_size=batch, instruments=server.instruments)

    # 1. A server error on the second Bundle (the first Observations): that Bundle is logged failed.
    with running_proxy(base_url) as proxy:
        rule = proxy.add(Reply(500), path=r"/fhir/?$", method="POST", skip=1, times=1)
        client = FhirClient(proxy.base_url, retry=RetryPolicy(max_attempts=1))
        first = write_back(con, config, ctx, run_id="wb-1", client=client)
    assert rule.fired == 1
    assert first.failed_bundles == 1
    failed = {i for (t, i, o, status, _) in _log(con, "wb-1") if o == "failed"}
    assert len(failed) == batch and all(
        status == 500 for (_, _, o, status, _) in _log(con, "wb-1") if o == "failed"
    )
    assert first.count("Observation", "created") == len(expected_obs) - batch
    assert first.count("Device", "created") == 1
    assert first.count("Flag", "created") == expected_flags
    assert first.count("Task", "created") == expected_flags
    assert _count(base_url, "Observation") == len(expected_obs) - batch

    # 2. The next run completes exactly what failed.
    client = FhirClient(base_url)
    second = write_back(con, config, ctx, run_id="wb-2", client=client)
    assert {i for (t, i, o, _, _) in _log(con, "wb-2") if o == "created"} == failed
    assert second.count() == batch and second.failed_bundles == 0
    assert _count(base_url, "Observation") == len(expected_obs)
    assert _count(base_url, "Flag") == expected_flags and _count(base_url, "Task") == expected_flags
    assert _count(base_url, "Device") == 1

    # 3. Nothing new: nothing written.
    third = write_back(con, config, ctx, run_id="wb-3", client=client)
    assert third.planned == 0 and _log(con, "wb-3") == []

    # 4. An amended and an entered-in-error PHQ-9 response on the server, pulled again.
    latest = data.latest()
    phq9 = sorted(rid for rid in responses if rid.endswith("-phq9"))
    amended_id, withdrawn_id = phq9[0], phq9[1]
    for rid, status in ((amended_id, "amended"), (withdrawn_id, "entered-in-error")):
        changed = {
            k: v for k, v in copy.deepcopy(latest[("QuestionnaireResponse", rid)]).items() if k != "meta"
        }
        changed["status"] = status
        r = requests.put(
            f"{base_url}/QuestionnaireResponse/{rid}",
            json=changed,
            headers={"Content-Type": "application/fhir+json"},
            timeout=30,
        )
        assert r.status_code in (200, 201), r.text[:300]
    _pull_and_build(con, base_url, "pull-2")
    fourth = write_back(con, config, ctx, run_id="wb-4", client=client)
    observations = {(i, o) for (t, i, o, _, _) in _log(con, "wb-4") if t == "Observation"}
    assert observations == {(f"{amended_id}|phq9", "updated"), (f"{withdrawn_id}|phq9", "updated")}
    assert fourth.failed_bundles == 0
    ids = {i: rid for (t, i, o, _, rid) in _log(con, "wb-4") if t == "Observation"}
    assert client.get_json(f"Observation/{ids[f'{amended_id}|phq9']}")["status"] == "amended"
    assert client.get_json(f"Observation/{ids[f'{withdrawn_id}|phq9']}")["status"] == "entered-in-error"
    assert _count(base_url, "Observation") == len(expected_obs)
