"""Auth schemes, SMART Backend Services (discovery, assertion, caching, re-auth) and log hygiene."""

from __future__ import annotations

import base64
import http.client
import logging
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipelines.resources.fhir import (
    AuthError,
    BasicAuth,
    BearerAuth,
    FhirClient,
    RedactingFilter,
    RetryPolicy,
    SmartBackendAuth,
    fingerprint,
)
from tests.support.fhir_stub import FhirStub, Recorded, Reply, bundle, outcome

CLIENT_ID = "alliance-qi-test"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


def no_sleep() -> RetryPolicy:
    return RetryPolicy(sleep=lambda _s: None, jitter=False)


class TokenServer:
    """Scripted SMART authorisation server + protected FHIR endpoint on the stub."""

    def __init__(self, stub: FhirStub, expires_in: int = 300) -> None:
        self.stub = stub
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.assertions: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.reject_all = False
        stub.route(
            "GET",
            ".well-known/smart-configuration",
            Reply(body={"token_endpoint": f"{stub.root_url}/auth/token"}, content_type="application/json"),
        )
        stub.route("POST", "/auth/token", self.token)
        stub.route("GET", "Patient", self.patient)

    @property
    def token_url(self) -> str:
        return f"{self.stub.root_url}/auth/token"

    def token(self, req: Recorded) -> Reply:
        form = req.form()
        self.forms.append(form)
        self.assertions.append(form["client_assertion"])
        token = f"tok{len(self.issued)}-SECRETTOKENVALUE"
        self.issued.append(token)
        return Reply(
            body={
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.expires_in,
                "scope": form.get("scope"),
            },
            content_type="application/json",
        )

    def patient(self, req: Recorded) -> Reply:
        current = f"Bearer {self.issued[-1]}" if self.issued else None
        if self.reject_all or req.header("Authorization") != current:
            return Reply(401, outcome("token not valid", code="login"), {"WWW-Authenticate": "Bearer"})
        return Reply(body=bundle([{"resourceType": "Patient", "id": "p1"}]))


def smart(pem: str, **kw: Any) -> SmartBackendAuth:
    return SmartBackendAuth(CLIENT_ID, pem, retry=no_sleep(), **kw)


# ---------------------------------------------------------------- static schemes


def test_bearer_and_basic_headers(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(body=bundle([])))
    FhirClient(stub.base_url, auth=BearerAuth("abc123")).request("GET", "Patient")
    FhirClient(stub.base_url, auth=BasicAuth("qi", "pa:ss")).request("GET", "Patient")
    first, second = stub.calls("GET", "Patient")
    assert first.header("Authorization") == "Bearer abc123"
    assert second.header("Authorization") == "Basic " + base64.b64encode(b"qi:pa:ss").decode()


def test_reprs_do_not_show_secrets(rsa_key: rsa.RSAPrivateKey) -> None:
    assert "abc123" not in repr(BearerAuth("abc123"))
    assert "s3cret" not in repr(BasicAuth("qi", "s3cret"))
    assert "PRIVATE" not in repr(smart(_pem(rsa_key)))


def test_static_bearer_401_twice_is_auth_error(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(401, outcome("expired")))
    with pytest.raises(AuthError) as info:
        FhirClient(stub.base_url, auth=BearerAuth("abc123"), retry=no_sleep()).request("GET", "Patient")
    assert info.value.status == 401
    assert len(stub.calls("GET", "Patient")) == 2  # re-applied once, then gave up


# ---------------------------------------------------------------- SMART Backend Services


def test_smart_discovery_and_assertion_claims(stub: FhirStub, rsa_key: rsa.RSAPrivateKey) -> None:
    server = TokenServer(stub)
    auth = smart(_pem(rsa_key), kid="key-2024", scope="system/QuestionnaireResponse.read")
    client = FhirClient(stub.base_url, auth=auth, retry=no_sleep())
    assert [r["id"] for r in client.search("Patient")] == ["p1"]

    assert auth.token_url == server.token_url  # discovered from .well-known/smart-configuration
    form = server.forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/QuestionnaireResponse.read"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion) == {"alg": "RS384", "typ": "JWT", "kid": "key-2024"}
    claims = jwt.decode(assertion, rsa_key.public_key(), algorithms=["RS384"], audience=server.token_url)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == server.token_url
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert len(claims["jti"]) >= 16


def test_jti_is_unique_per_assertion(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = smart(_pem(rsa_key), token_url="https://auth.example/token")
    assertions = [auth.client_assertion("https://auth.example/token") for _ in range(20)]
    jtis = {jwt.decode(a, options={"verify_signature": False})["jti"] for a in assertions}
    assert len(jtis) == 20


def test_es384_assertion_verifies() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    auth = SmartBackendAuth(CLIENT_ID, _pem(key), alg="ES384", token_url="https://auth.example/token")
    token = auth.client_assertion("https://auth.example/token")
    claims = jwt.decode(token, key.public_key(), algorithms=["ES384"], audience="https://auth.example/token")
    assert claims["iss"] == CLIENT_ID


@pytest.mark.parametrize("alg", ["RS256", "HS256"])
def test_only_rs384_and_es384(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    with pytest.raises(ValueError, match="RS384 or ES384"):
        SmartBackendAuth(CLIENT_ID, _pem(rsa_key), alg=alg)  # type: ignore[arg-type]


def test_key_must_match_alg(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="EC P-384"):
        SmartBackendAuth(CLIENT_ID, _pem(rsa_key), alg="ES384")
    with pytest.raises(ValueError, match="not an unencrypted PEM"):
        SmartBackendAuth(CLIENT_ID, "not a key")


def test_token_cached_and_reminted_near_expiry(stub: FhirStub, rsa_key: rsa.RSAPrivateKey) -> None:
    server = TokenServer(stub, expires_in=300)
    now = [1_000_000.0]
    auth = smart(_pem(rsa_key), clock=lambda: now[0])
    client = FhirClient(stub.base_url, auth=auth, retry=no_sleep())
    for _ in range(3):
        list(client.search("Patient"))
    assert len(server.issued) == 1  # cached across calls

    now[0] += 239  # 61 s left: still good
    list(client.search("Patient"))
    assert len(server.issued) == 1

    now[0] += 2  # 59 s left: within the 60 s margin, mint a new one before sending
    list(client.search("Patient"))
    assert len(server.issued) == 2
    assert stub.calls("GET", "Patient")[-1].header("Authorization") == f"Bearer {server.issued[1]}"
    # the new assertion was signed at the injected time
    claims = jwt.decode(server.assertions[1], options={"verify_signature": False})
    assert claims["iat"] == int(now[0]) and claims["exp"] <= now[0] + 300


def test_one_reauth_on_401_then_success(stub: FhirStub, rsa_key: rsa.RSAPrivateKey) -> None:
    server = TokenServer(stub)
    client = FhirClient(stub.base_url, auth=smart(_pem(rsa_key)), retry=no_sleep())
    list(client.search("Patient"))
    server.issued.append("token-the-server-now-expects")  # the server revoked our token
    assert [r["id"] for r in client.search("Patient")] == ["p1"]
    assert len(server.forms) == 2  # re-authorised once


def test_two_401s_raise_auth_error(stub: FhirStub, rsa_key: rsa.RSAPrivateKey) -> None:
    server = TokenServer(stub)
    server.reject_all = True
    client = FhirClient(stub.base_url, auth=smart(_pem(rsa_key)), retry=no_sleep())
    with pytest.raises(AuthError, match="still unauthorised after re-authorising"):
        list(client.search("Patient"))
    assert len(server.forms) == 2
    assert len(stub.calls("GET", "Patient")) == 2


def test_token_endpoint_refusal_is_auth_error_without_secrets(
    stub: FhirStub, rsa_key: rsa.RSAPrivateKey
) -> None:
    TokenServer(stub)
    refusal = {"error": "invalid_client", "error_description": "unknown key"}
    stub.route("POST", "/auth/token", Reply(401, refusal, content_type="application/json"))
    client = FhirClient(stub.base_url, auth=smart(_pem(rsa_key)), retry=no_sleep())
    with pytest.raises(AuthError) as info:
        client.request("GET", "Patient")
    message = str(info.value)
    assert "invalid_client: unknown key" in message
    assert "eyJ" not in message  # no assertion in the error


def test_token_endpoint_503_is_retried_with_a_fresh_assertion(
    stub: FhirStub, rsa_key: rsa.RSAPrivateKey
) -> None:
    server = TokenServer(stub)
    stub.route("POST", "/auth/token", Reply(503), server.token)
    client = FhirClient(stub.base_url, auth=smart(_pem(rsa_key)), retry=no_sleep())
    client.request("GET", "Patient")
    sent = [c.form()["client_assertion"] for c in stub.calls("POST", "/auth/token")]
    assert len(sent) == 2 and sent[0] != sent[1]  # a replayed jti would be refused


def test_discovery_falls_back_to_capability_oauth_uris(stub: FhirStub, rsa_key: rsa.RSAPrivateKey) -> None:
    server = TokenServer(stub)
    stub.route("GET", ".well-known/smart-configuration", Reply(404, outcome("no such file")))
    security = {
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": server.token_url}],
            }
        ]
    }
    stub.route(
        "GET",
        "metadata",
        Reply(
            body={"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "security": security}]}
        ),
    )
    auth = smart(_pem(rsa_key))
    FhirClient(stub.base_url, auth=auth, retry=no_sleep()).request("GET", "Patient")
    assert auth.token_url == server.token_url


# ---------------------------------------------------------------- log hygiene


def test_no_token_or_assertion_in_logs(
    stub: FhirStub, rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, every logger, including urllib3 if it logs
    server = TokenServer(stub)
    client = FhirClient(stub.base_url, auth=smart(_pem(rsa_key)), retry=no_sleep())
    list(client.search("Patient"))
    server.issued.append("token-rotated-SECRETTOKENVALUE")
    list(client.search("Patient"))  # 401 -> re-auth path logs too
    text = caplog.text
    assert server.forms, "the flow ran"
    for secret in [*server.issued[:-1], *server.assertions]:
        assert secret not in text
    assert "SECRETTOKENVALUE" not in text
    assert "client_assertion=" not in text
    assert "Authorization" not in text
    assert f"fp={fingerprint(server.issued[0])}" in text  # a fingerprint is all that is logged


@pytest.mark.parametrize(
    ("message", "leak"),
    [
        ("headers={'Authorization': 'Bearer abc.def-ghi'}", "abc.def-ghi"),
        ("Authorization: Basic cWk6cGFzcw==", "cWk6cGFzcw=="),
        ("body=grant_type=client_credentials&client_assertion=eyJhbGciOi.eyJpc3Mi.c2ln&scope=x", "eyJpc3Mi"),
        ('{"access_token": "opaque-123", "expires_in": 300}', "opaque-123"),
        ("{'access_token': 'opaque-456'}", "opaque-456"),
        ("token eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJ4In0.sig-nature here", "eyJzdWIiOiJ4In0"),
        ("password=hunter2&user=qi", "hunter2"),
    ],
)
def test_redacting_filter_masks_credentials(message: str, leak: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (message,), None)
    assert RedactingFilter().filter(record) is True
    assert leak not in record.getMessage()
    assert "***" in record.getMessage()


def test_filter_applies_on_the_package_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alliance_qi.fhir")
    logging.getLogger("alliance_qi.fhir").info("oops %s", "Bearer leaked-token-value")
    assert "leaked-token-value" not in caplog.text


def test_importing_the_package_enables_no_wire_debugging() -> None:
    import pipelines.resources.fhir  # noqa: F401 - the import is the point

    assert http.client.HTTPConnection.debuglevel == 0  # would print headers to stdout
    assert logging.getLogger("urllib3").level in (logging.NOTSET, logging.WARNING)
