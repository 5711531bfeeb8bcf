"""Retry policy, Retry-After parsing and error messages, over real HTTP against the stub server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.resources.fhir import (
    AuthError,
    FatalNetworkError,
    FhirClient,
    RetryPolicy,
    TemporaryNetworkError,
    parse_retry_after,
    redact_url,
)
from tests.support.fhir_stub import FhirStub, Recorded, Reply, bundle, outcome

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


def policy(sleeps: list[float], **kw: object) -> RetryPolicy:
    """A policy that records its sleeps instead of sleeping (and no jitter, so delays are exact)."""
    return RetryPolicy(sleep=sleeps.append, jitter=False, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- Retry-After parsing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),  # HTTP-date, 30 s ahead
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),  # in the past: go now
        ("Wednesday, 01-May-24 12:01:00 GMT", 60.0),  # obsolete RFC 850 form, still sent by old IIS
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_backoff_is_exponential_and_capped() -> None:
    p = RetryPolicy(jitter=False, base_delay=0.5, max_delay=3.0)
    assert [p.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.delay(1, retry_after=100.0) == 3.0  # Retry-After is capped at max_delay too
    assert p.delay(1, retry_after=1.0) == 1.0


@given(attempt=st.integers(min_value=1, max_value=60), r=st.floats(min_value=0, max_value=1))
def test_full_jitter_stays_within_zero_and_cap(attempt: int, r: float) -> None:
    p = RetryPolicy(random=lambda: r)
    assert 0.0 <= p.backoff(attempt) <= p.max_delay


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://ehr/fhir/Patient?identifier=123&_count=50",
            "https://ehr/fhir/Patient?identifier=…&_count=…",
        ),
        ("https://u:pw@ehr/fhir/Patient/9", "https://ehr/fhir/Patient/9"),
        ("https://ehr/fhir/metadata", "https://ehr/fhir/metadata"),
        ("https://ehr/fhir/Patient?name=Smith&name=John#frag", "https://ehr/fhir/Patient?name=…&name=…"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# ---------------------------------------------------------------- retries over HTTP


def test_429_with_retry_after_seconds(stub: FhirStub) -> None:
    stub.route(
        "GET", "Patient", Reply(429, outcome("slow down"), {"Retry-After": "3"}), Reply(body=bundle([]))
    )
    sleeps: list[float] = []
    client = FhirClient(stub.base_url, retry=policy(sleeps))
    assert client.request("GET", "Patient").status_code == 200
    assert sleeps == [3.0]
    assert len(stub.calls("GET", "Patient")) == 2


def test_503_with_retry_after_http_date(stub: FhirStub) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    stub.route("GET", "Patient", Reply(503, headers={"Retry-After": when}), Reply(body=bundle([])))
    sleeps: list[float] = []
    FhirClient(stub.base_url, retry=policy(sleeps)).request("GET", "Patient")
    assert len(sleeps) == 1
    assert 2.0 <= sleeps[0] <= 4.0  # the date has one-second resolution


def test_503_burst_then_success_backs_off_exponentially(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(503), Reply(502), Reply(504), Reply(body=bundle([])))
    sleeps: list[float] = []
    response = FhirClient(stub.base_url, retry=policy(sleeps)).request("GET", "Patient")
    assert response.status_code == 200
    assert sleeps == [0.5, 1.0, 2.0]


def test_total_wait_bound_raises_temporary_error(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(503, outcome("down"), {"Retry-After": "2"}))
    sleeps: list[float] = []
    client = FhirClient(stub.base_url, retry=policy(sleeps, max_total_wait=5.0, max_attempts=50))
    with pytest.raises(TemporaryNetworkError) as info:
        client.request("GET", "Patient", params={"identifier": "MRN-555"})
    assert sleeps == [2.0, 2.0]  # a third wait would make 6 s > 5 s
    err = info.value
    assert (err.attempts, err.total_wait, err.status) == (3, 4.0, 503)
    assert "total retry budget" in str(err)
    assert "MRN-555" not in str(err) and "identifier=…" in str(err)


def test_max_attempts_bound(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(500))
    sleeps: list[float] = []
    with pytest.raises(TemporaryNetworkError) as info:
        FhirClient(stub.base_url, retry=policy(sleeps, max_attempts=3)).request("GET", "Patient")
    assert info.value.attempts == 3
    assert len(stub.calls("GET", "Patient")) == 3
    assert len(sleeps) == 2


def test_404_is_fatal_at_once_and_names_the_url_without_query_values(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(404, outcome("Unknown resource for identifier")))
    sleeps: list[float] = []
    client = FhirClient(stub.base_url, retry=policy(sleeps))
    with pytest.raises(FatalNetworkError) as info:
        client.request("GET", "Patient", params={"identifier": "MRN-123", "name": "Smith"})
    message = str(info.value)
    assert info.value.status == 404
    assert message.startswith("GET http://127.0.0.1:")
    assert "/fhir/Patient?identifier=…&name=…" in message
    assert "MRN-123" not in message and "Smith" not in message
    assert "Unknown resource for identifier" in message  # the OperationOutcome diagnostics
    assert sleeps == [] and len(stub.calls()) == 1


@pytest.mark.parametrize("status", [400, 405, 409, 422])
def test_other_4xx_are_fatal(stub: FhirStub, status: int) -> None:
    stub.route("GET", "Patient", Reply(status, "<html>proxy error</html>", content_type="text/html"))
    with pytest.raises(FatalNetworkError) as info:
        FhirClient(stub.base_url, retry=policy([])).request("GET", "Patient")
    assert info.value.status == status and info.value.diagnostics is None
    assert len(stub.calls()) == 1


def test_403_is_an_auth_error(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(403, outcome("scope does not permit read")))
    with pytest.raises(AuthError, match="scope does not permit read"):
        FhirClient(stub.base_url, retry=policy([])).request("GET", "Patient")


def test_connection_reset_is_retried(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(reset=True), Reply(reset=True), Reply(body=bundle([])))
    sleeps: list[float] = []
    response = FhirClient(stub.base_url, retry=policy(sleeps)).request("GET", "Patient")
    assert response.status_code == 200
    assert sleeps == [0.5, 1.0]


def test_read_timeout_is_retried(stub: FhirStub) -> None:
    calls: list[int] = []

    def slow_once(req: Recorded) -> Reply:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.4)
        return Reply(body=bundle([]))

    stub.route("GET", "Patient", slow_once)
    sleeps: list[float] = []
    client = FhirClient(stub.base_url, retry=policy(sleeps), timeout=(2.0, 0.1))
    assert client.request("GET", "Patient").status_code == 200
    assert sleeps == [0.5]


def test_connection_refused_exhausts_to_temporary_error() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    client = FhirClient(f"http://127.0.0.1:{port}/fhir", retry=policy(sleeps, max_attempts=3))
    with pytest.raises(TemporaryNetworkError) as info:
        client.request("GET", "Patient", params={"identifier": "MRN-9"})
    assert info.value.attempts == 3
    assert "ConnectionError" in str(info.value)
    assert "MRN-9" not in str(info.value)
    assert info.value.__cause__ is None  # raw urllib3 text (with the query) is not chained


def test_every_request_has_explicit_accept_and_user_agent(stub: FhirStub) -> None:
    stub.route("GET", "metadata", Reply(body={"resourceType": "CapabilityStatement", "rest": []}))
    FhirClient(stub.base_url, user_agent="qi-test/1").capability()
    call = stub.calls()[0]
    assert call.header("Accept") == "application/fhir+json"
    assert call.header("User-Agent") == "qi-test/1"
