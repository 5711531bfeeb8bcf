"""The FHIR client against a real FHIR server process (sekmet-fhir on 127.0.0.1, see demo/server.py).

One server per module: load 30 Patients, 2 Questionnaire versions and 5 QuestionnaireResponses,
then check paging, incremental pulls (auto mode), canonical resolution and a Bulk $export round
trip. A second server with SMART Backend Services checks the token flow end to end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipelines.resources.fhir import (
    AuthError,
    BulkExporter,
    FhirClient,
    MemoryStateStore,
    SmartBackendAuth,
    max_last_updated,
)
from pipelines.resources.fhir.folder import iter_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts FHIR server processes

log = logging.getLogger("tests.integration.fhir")

N_PATIENTS = 30
N_RESPONSES = 5
WAI = "http://example.org/fhir/Questionnaire/wai-sr"


def patients() -> list[dict[str, Any]]:
    return [{"resourceType": "Patient", "id": f"p{i:02d}", "gender": "unknown"} for i in range(N_PATIENTS)]


def questionnaires() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Questionnaire",
            "id": f"wai-{v.replace('.', '-')}",
            "url": WAI,
            "version": v,
            "status": "active",
            "item": [{"linkId": "1", "type": "integer", "text": f"v{v}"}],
        }
        for v in ("1.0", "1.1")
    ]


def responses() -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "QuestionnaireResponse",
            "id": f"qr{i}",
            "status": "completed",
            "questionnaire": f"{WAI}|1.1",
            "subject": {"reference": f"Patient/p{i:02d}"},
            "authored": f"2024-05-0{i + 1}T10:00:00Z",
            "item": [{"linkId": "1", "answer": [{"valueInteger": 4}]}],
        }
        for i in range(N_RESPONSES)
    ]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    from demo.server import running_server

    with running_server(tmp_path_factory.mktemp("fhir-server")) as srv:
        client = FhirClient(srv.base_url)
        started = time.monotonic()
        for resource in [*patients(), *questionnaires(), *responses()]:
            client.request("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource)
        timings = {"load_seconds": time.monotonic() - started}
        yield srv.base_url, timings


def test_search_pages_through_everything_once(loaded: tuple[str, dict[str, Any]]) -> None:
    base, timings = loaded
    client = FhirClient(base, page_size=7)
    stream = client.search("Patient")
    ids = [r["id"] for r in stream]
    assert sorted(ids) == [f"p{i:02d}" for i in range(N_PATIENTS)]
    assert len(set(ids)) == len(ids)
    assert stream.stats.pages == 5  # 7+7+7+7+2, no trailing empty page fetched
    assert stream.stats.duplicates == 0
    log.info("load %.2fs; search Patient page_size=7: %s", timings["load_seconds"], stream.stats.as_dict())


def test_pull_auto_and_watermark(loaded: tuple[str, dict[str, Any]]) -> None:
    base, _ = loaded
    client = FhirClient(base, page_size=2)
    # sekmet's CapabilityStatement has no QuestionnaireResponse entry, so auto mode probes.
    assert client.supports_search_param("QuestionnaireResponse", "_lastUpdated") is None
    assert client.supports_search_param("Patient", "_lastUpdated") is True
    stream = client.pull("QuestionnaireResponse", None, mode="auto")
    pulled = list(stream)
    log.info("auto mode for QuestionnaireResponse: %s (%s)", stream.mode, stream.stats.as_dict())
    assert stream.mode == "last_updated"  # the probe found _lastUpdated honoured
    assert sorted(r["id"] for r in pulled) == [f"qr{i}" for i in range(N_RESPONSES)]

    watermark = max_last_updated(pulled)
    assert watermark is not None
    again = client.pull("QuestionnaireResponse", watermark, mode="auto")  # default 5-minute overlap
    assert len(list(again)) == N_RESPONSES  # everything was loaded within the overlap
    after = client.pull("QuestionnaireResponse", watermark + timedelta(seconds=1), overlap=timedelta(0))
    assert list(after) == []

    windows = client.pull(
        "QuestionnaireResponse",
        None,
        mode="date_window",
        floor=watermark - timedelta(days=90),
        window=timedelta(days=30),
    )
    windowed = list(windows)
    # sekmet ignores `authored` for QuestionnaireResponse (no such search parameter there) and says
    # so in an OperationOutcome: the first window is then everything and the rest are skipped.
    assert sorted(r["id"] for r in windowed) == [f"qr{i}" for i in range(N_RESPONSES)]
    assert windows.stats.windows == 1 and len(windows.queries) == 4
    assert client.resolve_mode("QuestionnaireResponse", "auto") == "last_updated"
    assert client.param_supported("QuestionnaireResponse", "authored") is False  # the probe saw the warning
    log.info("date_window pull: %s", windows.stats.as_dict())


def test_resolve_canonical_on_a_server_that_ignores_url(loaded: tuple[str, dict[str, Any]]) -> None:
    base, _ = loaded
    client = FhirClient(base)
    assert client.resolve_canonical("Questionnaire", f"{WAI}|1.0")["id"] == "wai-1-0"  # type: ignore[index]
    assert client.resolve_canonical("Questionnaire", WAI)["version"] == "1.1"  # type: ignore[index]
    assert client.resolve_canonical("Questionnaire", "Questionnaire/wai-1-0")["version"] == "1.0"  # type: ignore[index]
    assert client.resolve_canonical("Questionnaire", f"{WAI}|9") is None
    assert client.read("Patient/nobody") is None


def test_bulk_export_round_trip(loaded: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    base, _ = loaded
    store = MemoryStateStore()
    exporter = BulkExporter(FhirClient(base), store, poll_interval=0.2, max_wait=60)
    started = time.monotonic()
    result = exporter.export("it", ["Patient", "QuestionnaireResponse", "Questionnaire"], None, tmp_path)
    log.info(
        "bulk export: %.2fs, counts %s, transactionTime %s",
        time.monotonic() - started,
        result.counts,
        result.transaction_time.isoformat(),
    )
    assert result.counts == {"Patient": N_PATIENTS, "QuestionnaireResponse": N_RESPONSES, "Questionnaire": 2}
    on_disk: dict[str, int] = {}
    for resource, _origin, error in iter_folder(tmp_path):
        assert error is None and resource is not None
        on_disk[resource["resourceType"]] = on_disk.get(resource["resourceType"], 0) + 1
    assert on_disk == result.counts
    assert store.load("it") is None

    # transactionTime is the next _since: nothing changed since, so nothing comes back
    nothing = exporter.export("it", ["Patient"], result.transaction_time, tmp_path / "next")
    assert nothing.counts == {}


def test_smart_backend_services_end_to_end(tmp_path: Path) -> None:
    from demo.server import running_server

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "client_public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    auth_settings = {
        "types": ["smart"],
        "token_lifetime": 300,
        "smart_clients": [
            {"client_id": "alliance-qi", "public_key_path": str(public), "scopes": "system/*.*"}
        ],
    }
    with running_server(tmp_path / "server", auth=auth_settings) as srv:
        auth = SmartBackendAuth("alliance-qi", pem, scope="system/*.*")
        client = FhirClient(srv.base_url, auth=auth)
        client.request("PUT", "Patient/s1", json={"resourceType": "Patient", "id": "s1"})
        assert [r["id"] for r in client.search("Patient")] == ["s1"]
        assert auth.tokens_minted == 1
        assert auth.token_url == f"{srv.root_url}/auth/token"
        auth.invalidate()
        list(client.search("Patient"))
        assert auth.tokens_minted == 2  # new assertion, new jti: accepted
        unauthenticated = FhirClient(srv.base_url)
        with pytest.raises(AuthError, match="HTTP 401"):
            list(unauthenticated.search("Patient"))
