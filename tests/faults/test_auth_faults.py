"""Expired access tokens, with a real SMART Backend Services server behind the fault proxy.

The proxy forwards the bearer token to sekmet-fhir, which checks it; the fault makes the proxy
declare the token expired part-way through a pull. The token endpoint is reached directly (as a
separate authorisation server usually is): sekmet checks that a client assertion's `aud` is its
own token URL, so the assertion cannot go through a proxy with another address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from demo.generator import GeneratedData
from demo.loader import load_to_server
from demo.server import FhirServer, running_server
from pipelines.resources.fhir import SmartBackendAuth
from pipelines.resources.fhir.auth import fingerprint
from tests.faults.proxy import ExpireToken, FaultProxy, running_proxy
from tests.faults.support import LogJournal, event_text, page_query, run_raw, snapshot, source, step_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts FHIR server processes

QR = r"/fhir/QuestionnaireResponse$"
CLIENT_ID = "alliance-qi-faults"


class SmartServer:
    """A sekmet-fhir with SMART Backend Services on, the clinic loaded, and our client's key."""

    def __init__(self, server: FhirServer, pem: str) -> None:
        self.server = server
        self.pem = pem
        self.token_url = f"{server.root_url}/auth/token"

    def auth(self) -> SmartBackendAuth:
        """A fresh SMART client for this server."""
        return SmartBackendAuth(
            CLIENT_ID, self.pem, scope="system/*.*", token_url=self.token_url, base_url=self.server.base_url
        )


@pytest.fixture(scope="module")
def smart_server(tmp_path_factory: pytest.TempPathFactory, clinic: GeneratedData) -> Iterator[SmartServer]:
    folder = tmp_path_factory.mktemp("smart")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = folder / "client_public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings = {
        "types": ["smart"],
        "token_lifetime": 300,
        "smart_clients": [{"client_id": CLIENT_ID, "public_key_path": str(public), "scopes": "system/*.*"}],
    }
    with running_server(folder / "server", auth=settings) as server:
        smart = SmartServer(server, pem)
        load_to_server(
            server.base_url, clinic, headers={"Authorization": f"Bearer {smart.auth().access_token()}"}
        )
        yield smart


@pytest.fixture
def smart_proxy(smart_server: SmartServer, log_journal: LogJournal) -> Iterator[FaultProxy]:
    with running_proxy(smart_server.server.base_url) as proxy:
        log_journal.proxies.append(proxy)
        yield proxy


@pytest.fixture
def assertions(monkeypatch: pytest.MonkeyPatch, log_journal: LogJournal) -> list[str]:
    """Every client assertion the pipeline signs during the test (they are secrets too)."""
    signed: list[str] = []
    original = SmartBackendAuth.client_assertion

    def recording(self: SmartBackendAuth, token_url: str, now: float | None = None) -> str:
        value = original(self, token_url, now)
        signed.append(value)
        log_journal.extra_secrets.add(value)
        return value

    monkeypatch.setattr(SmartBackendAuth, "client_assertion", recording)
    return signed


def test_expired_smart_token_is_renewed_and_never_logged(
    tmp_path: Path,
    smart_server: SmartServer,
    smart_proxy: FaultProxy,
    assertions: list[str],
    log_journal: LogJournal,
    clean,
) -> None:
    rule = smart_proxy.add(ExpireToken(), QR, query=page_query(3))
    fhir = source(
        smart_proxy.base_url,
        auth_mode="smart",
        client_id=CLIENT_ID,
        private_key_pem=smart_server.pem,
        scope="system/*.read",
        token_url=smart_server.token_url,
    )
    result = run_raw(fhir, tmp_path / "w.duckdb")
    log_journal.add_text(event_text(result))
    assert result.success and rule.fired == 1
    snapshot(tmp_path / "w.duckdb").assert_equals(clean)

    refused = smart_proxy.seen(QR, status=401)
    assert len(refused) == 1 and refused[0].fault == "expire token"
    # The page refused with the expired token was asked again, with a new token, and served.
    page3 = [e for e in smart_proxy.seen(QR) if e.params.get("_offset") == page_query(3)["_offset"]]
    assert [e.status for e in page3] == [401, 200]
    tokens = smart_proxy.secrets
    assert len(tokens) >= 2 and smart_proxy.expired and smart_proxy.expired < tokens
    assert len(assertions) >= 2  # one assertion per token request, each signed afresh

    # No token or assertion in any log line; the capture works: the tokens' fingerprints are there.
    assert log_journal.leaks() == []
    text = log_journal.text()
    assert all(fingerprint(t) in text for t in smart_proxy.expired)


def test_expired_static_bearer_token_fails_clearly_and_a_new_token_recovers(
    tmp_path: Path,
    smart_server: SmartServer,
    smart_proxy: FaultProxy,
    log_journal: LogJournal,
    clean,
) -> None:
    warehouse = tmp_path / "w.duckdb"
    first_token = smart_server.auth().access_token()  # issued out of band, as a static token is
    log_journal.extra_secrets.add(first_token)
    smart_proxy.add(ExpireToken(), QR, query=page_query(2))
    failed = run_raw(source(smart_proxy.base_url, auth_mode="bearer", token=first_token), warehouse)
    log_journal.add_text(event_text(failed))
    assert not failed.success
    errors = step_errors(failed)
    assert set(errors) == {"raw__questionnaire_response"}, errors
    messages = errors["raw__questionnaire_response"]
    # The page where the token expired. Fatal: no step retry (each would be another failed login).
    assert "/fhir/QuestionnaireResponse?_count=…&_offset=… failed: HTTP 401" in messages[0], messages
    assert len(messages) == 1
    for message in messages:
        assert "HTTP 401 (still unauthorised after re-authorising)" in message, message
        assert "Access token expired" in message  # the server's own words (its OperationOutcome)
    assert first_token not in event_text(failed)
    partial = snapshot(warehouse)
    partial.assert_sound()
    assert "QuestionnaireResponse" not in partial.watermarks

    # The operator issues a new token; the rerun completes the warehouse.
    smart_proxy.clear()
    second_token = smart_server.auth().access_token()
    log_journal.extra_secrets.add(second_token)
    rerun = run_raw(source(smart_proxy.base_url, auth_mode="bearer", token=second_token), warehouse)
    log_journal.add_text(event_text(rerun))
    assert rerun.success
    snapshot(warehouse).assert_equals(clean)
    assert {first_token, second_token} <= smart_proxy.secrets
    assert log_journal.leaks() == []
