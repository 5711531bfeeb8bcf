"""The FHIR client's rules for a hostile server, on a scripted stub (fast; the fault suite's
`test_hostile_server.py` runs the same faults through the pipeline against a real server).

Credentials by origin, masking of server text, the lenient page parse, the stale-page stop, the
byte limits and which errors count as fatal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.resources.fhir import (
    AuthError,
    BasicAuth,
    BearerAuth,
    FatalNetworkError,
    FhirClient,
    FhirError,
    NoAuth,
    RetryPolicy,
)
from pipelines.resources.fhir.auth import mask_secrets
from pipelines.resources.fhir.errors import LimitExceededError, UntrustedOriginError, is_fatal
from tests.support.fhir_stub import FhirStub, Reply, bundle, outcome

TOKEN = "s3cr3t-token-value-123"


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


def qr(rid: str) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "status": "completed",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00Z"},
    }


def client_for(stub: FhirStub, **kw: Any) -> FhirClient:
    kw.setdefault("auth", BearerAuth(TOKEN))
    return FhirClient(stub.base_url, retry=RetryPolicy(sleep=lambda _s: None), **kw)


def test_credentials_go_to_the_base_origin_and_trusted_origins_only() -> None:
    client = FhirClient(
        "https://ehr.example.org/fhir", auth=BearerAuth(TOKEN), trusted_origins=["https://files.example.org"]
    )
    assert client.credentials_allowed("https://ehr.example.org/fhir/Patient?x=1")
    assert client.credentials_allowed(
        "https://ehr.example.org:443/other/path"
    )  # the default port is the origin's
    assert client.credentials_allowed("https://files.example.org/b/1.ndjson")
    assert not client.credentials_allowed("https://evil.example.net/fhir/Patient")
    assert not client.credentials_allowed("https://ehr.example.org:8443/fhir/Patient")  # another port
    assert not client.credentials_allowed("https://ehr.example.org.evil.net/fhir")


def test_credentials_never_go_over_http_from_an_https_base(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(body=bundle([])))
    # The base is https (nothing listens there); the stub is a live http server, even trusted.
    client = FhirClient(
        f"https://127.0.0.1:{stub.port}/fhir",
        auth=BearerAuth(TOKEN),
        trusted_origins=[f"http://127.0.0.1:{stub.port}"],
    )
    with pytest.raises(
        UntrustedOriginError, match="plain http while the configured server uses https"
    ) as raised:
        client.request("GET", f"{stub.base_url}/Patient?identifier=123")
    assert stub.requests == []  # refused before any connection
    assert "identifier" not in str(raised.value) and is_fatal(raised.value)


def test_a_cross_origin_next_link_is_refused_before_it_is_requested(stub: FhirStub) -> None:
    with FhirStub() as elsewhere:
        elsewhere.route("GET", "Patient", Reply(body=bundle([qr("b")])))
        stub.route(
            "GET",
            "QuestionnaireResponse",
            Reply(body=bundle([qr("a")], next_url=f"{elsewhere.base_url}/Patient?page=2")),
        )
        client = client_for(stub)
        with pytest.raises(
            UntrustedOriginError, match=f"refusing to send credentials to http://127.0.0.1:{elsewhere.port}"
        ):
            list(client.search("QuestionnaireResponse"))
        assert elsewhere.requests == []
        # Without credentials there is nothing to leak: followed, and the page URL is the real one.
        stream = FhirClient(stub.base_url, auth=NoAuth()).search("QuestionnaireResponse")
        assert [r["id"] for r in stream] == ["a", "b"]
        assert stream.stats.last_url.startswith(elsewhere.base_url)


def test_server_text_that_echoes_the_credential_is_masked(stub: FhirStub) -> None:
    echo = outcome(f"bad Authorization: Bearer {TOKEN} (token {TOKEN})")
    stub.route("GET", "Patient/1", Reply(400, echo))
    with pytest.raises(FatalNetworkError) as raised:
        client_for(stub).read("Patient/1")
    assert TOKEN not in str(raised.value) and "(token ***)" in str(raised.value)
    basic = BasicAuth("user", "pa55word-xyz")
    assert mask_secrets("pw pa55word-xyz sent", basic.secrets()) == "pw *** sent"


def test_an_undecodable_entry_is_set_aside_and_the_rest_of_the_page_kept(stub: FhirStub) -> None:
    body = orjson.dumps(bundle([qr("good-1"), qr("bad"), qr("good-2")]))
    body = body.replace(b'"id":"bad"', b'"id":"bad","language":"x\xe9"')
    stub.route("GET", "QuestionnaireResponse", Reply(body=body))
    stream = client_for(stub).search("QuestionnaireResponse")
    assert [r["id"] for r in stream] == ["good-1", "good-2"]
    rejects = stream.take_rejects()
    assert len(rejects) == 1 and '"id":"bad"' in rejects[0].text and "\\xe9" in rejects[0].text
    assert "not valid UTF-8" in rejects[0].reason and "byte 0xe9 at offset" in rejects[0].reason


def test_a_body_that_is_not_json_still_fails_the_page(stub: FhirStub) -> None:
    stub.route("GET", "QuestionnaireResponse", Reply(body=b'{"resourceType":"Bundle","entry":[{"resource":'))
    with pytest.raises(FatalNetworkError, match="response is not JSON") as raised:
        list(client_for(stub).search("QuestionnaireResponse"))
    assert not is_fatal(raised.value)  # a cut-off body: a step retry may get it whole


def test_pages_that_bring_nothing_new_stop_the_search(stub: FhirStub) -> None:
    def same(req: Any) -> Reply:
        n = int(req.query.get("n", ["0"])[0])
        return Reply(
            body=bundle([qr("a"), qr("b")], next_url=f"{stub.base_url}/QuestionnaireResponse?n={n + 1}")
        )

    stub.route("GET", "QuestionnaireResponse", same)
    with pytest.raises(FhirError, match=r"2 consecutive pages .*max_stale_pages=2"):
        list(client_for(stub, max_stale_pages=2).search("QuestionnaireResponse"))
    assert len(stub.calls("GET", "QuestionnaireResponse")) == 3


def test_page_and_download_byte_limits(stub: FhirStub, tmp_path: Path) -> None:
    stub.route("GET", "QuestionnaireResponse", Reply(body=bundle([qr(str(i)) for i in range(50)])))
    with pytest.raises(LimitExceededError, match="max_page_bytes=1000"):
        list(client_for(stub, max_page_bytes=1000).search("QuestionnaireResponse"))
    stub.route("GET", "/files/x.ndjson", Reply(body=b"{}\n" * 1000, content_type="application/fhir+ndjson"))
    with pytest.raises(LimitExceededError, match="max_download_bytes=100"):
        client_for(stub, max_download_bytes=100).download(
            f"{stub.root_url}/files/x.ndjson", tmp_path / "x.ndjson"
        )
    assert not list(tmp_path.iterdir())


def test_which_errors_are_fatal() -> None:
    assert is_fatal(AuthError("GET", "http://x/fhir/Patient", 401))
    assert is_fatal(FatalNetworkError("GET", "http://x/fhir/Patient", 404))
    assert not is_fatal(FatalNetworkError("GET", "http://x/fhir/Patient", 200, reason="response is not JSON"))
    assert not is_fatal(FhirError("paging loops"))
    assert not is_fatal(ValueError("x"))
