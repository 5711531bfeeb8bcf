"""Incremental pulls: watermark overlap, auto-mode choice (capability / probe), date windows, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipelines.resources.fhir import (
    FhirClient,
    RetryPolicy,
    format_instant,
    max_last_updated,
    parse_instant,
)
from tests.support.fhir_stub import FhirStub, Recorded, Reply, bundle, outcome

SINCE = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2024, 5, 10, 8, 30, 0, tzinfo=UTC)


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


def client_for(stub: FhirStub) -> FhirClient:
    return FhirClient(stub.base_url, retry=RetryPolicy(sleep=lambda _s: None), clock=lambda: NOW)


def capability(*resources: dict[str, Any]) -> Reply:
    return Reply(
        body={
            "resourceType": "CapabilityStatement",
            "rest": [
                {
                    "mode": "server",
                    "resource": list(resources),
                    "searchParam": [{"name": "_id", "type": "token"}],
                }
            ],
        }
    )


def res_type(name: str, *params: str) -> dict[str, Any]:
    return {"type": name, "searchParam": [{"name": p, "type": "date"} for p in params]}


def qr(rid: str, version: str = "1", updated: str = "2024-05-02T00:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "meta": {"versionId": version, "lastUpdated": updated},
    }


def searches(stub: FhirStub, path: str) -> list[dict[str, list[str]]]:
    return [c.query for c in stub.calls("GET", path)]


# ---------------------------------------------------------------- last_updated


def test_overlap_is_subtracted_from_the_watermark(stub: FhirStub) -> None:
    stub.route("GET", "QuestionnaireResponse", Reply(body=bundle([qr("1")])))
    stream = client_for(stub).pull(
        "QuestionnaireResponse", SINCE, overlap=timedelta(minutes=5), mode="last_updated"
    )
    assert [r["id"] for r in stream] == ["1"]
    assert stream.mode == "last_updated"
    assert searches(stub, "QuestionnaireResponse") == [
        {"_lastUpdated": ["ge2024-05-01T11:55:00Z"], "_count": ["500"]}
    ]


def test_until_bounds_the_pull_and_naive_datetimes_are_utc(stub: FhirStub) -> None:
    stub.route("GET", "Encounter", Reply(body=bundle([])))
    list(
        client_for(stub).pull(
            "Encounter",
            datetime(2024, 5, 1, 12),
            overlap=timedelta(0),
            mode="last_updated",
            until=datetime(2024, 5, 2, tzinfo=UTC),
        )
    )
    assert searches(stub, "Encounter")[0]["_lastUpdated"] == [
        "ge2024-05-01T12:00:00Z",
        "lt2024-05-02T00:00:00Z",
    ]


def test_no_watermark_is_a_full_pull(stub: FhirStub) -> None:
    stub.route("GET", "QuestionnaireResponse", Reply(body=bundle([qr("1")])))
    list(
        client_for(stub).pull(
            "QuestionnaireResponse", None, mode="last_updated", params={"status": "completed"}
        )
    )
    assert searches(stub, "QuestionnaireResponse") == [{"status": ["completed"], "_count": ["500"]}]


# ---------------------------------------------------------------- auto mode


def test_auto_uses_last_updated_when_the_capability_lists_it(stub: FhirStub) -> None:
    stub.route("GET", "metadata", capability(res_type("QuestionnaireResponse", "_lastUpdated", "authored")))
    stub.route("GET", "QuestionnaireResponse", Reply(body=bundle([qr("1")])))
    client = client_for(stub)
    for _ in range(2):
        stream = client.pull("QuestionnaireResponse", SINCE)
        list(stream)
        assert stream.mode == "last_updated"
    assert len(stub.calls("GET", "metadata")) == 1  # the CapabilityStatement is fetched once
    assert all("_lastUpdated" in q for q in searches(stub, "QuestionnaireResponse"))


def test_auto_falls_back_to_date_windows_when_the_type_lacks_last_updated(stub: FhirStub) -> None:
    stub.route("GET", "metadata", capability(res_type("QuestionnaireResponse", "authored")))
    stub.route("GET", "QuestionnaireResponse", Reply(body=bundle([qr("1")])))
    client = client_for(stub)
    stream = client.pull(
        "QuestionnaireResponse",
        datetime(2024, 3, 1, tzinfo=UTC),
        overlap=timedelta(0),
        window=timedelta(days=30),
    )
    assert [r["id"] for r in stream] == ["1"]  # the same resource in every window is yielded once
    assert stream.mode == "date_window"
    assert [q["authored"] for q in searches(stub, "QuestionnaireResponse")] == [
        ["ge2024-03-01T00:00:00Z", "lt2024-03-31T00:00:00Z"],
        ["ge2024-03-31T00:00:00Z", "lt2024-04-30T00:00:00Z"],
        ["ge2024-04-30T00:00:00Z"],  # open-ended up to now: future-dated records are not lost
    ]
    assert stream.stats.windows == 3 and stream.stats.duplicates == 2


def test_windows_stop_after_the_first_when_the_server_says_it_ignored_the_date(stub: FhirStub) -> None:
    text = "Unknown search parameter 'authored' for QuestionnaireResponse; parameter ignored"
    ignored = {"resource": outcome(text, "warning", "not-supported"), "search": {"mode": "outcome"}}
    stub.route(
        "GET", "QuestionnaireResponse", Reply(body=bundle([qr("1"), qr("2")], extra_entries=[ignored]))
    )
    stream = client_for(stub).pull(
        "QuestionnaireResponse", datetime(2023, 1, 1, tzinfo=UTC), mode="date_window"
    )
    assert [r["id"] for r in stream] == ["1", "2"]
    assert len(stream.queries) > 10  # 16 months of 30-day windows were planned
    assert len(stub.calls("GET", "QuestionnaireResponse")) == 1 and stream.stats.windows == 1


def test_date_windows_until_a_bound_and_custom_param(stub: FhirStub) -> None:
    stub.route("GET", "Observation", Reply(body=bundle([])))
    stream = client_for(stub).pull(
        "Observation",
        datetime(2024, 1, 1, 0, 0, 0, 500, tzinfo=UTC),
        overlap=timedelta(days=1),
        mode="date_window",
        date_param="date",
        window=timedelta(days=10),
        until=datetime(2024, 1, 20, tzinfo=UTC),
    )
    list(stream)
    assert [q["date"] for q in searches(stub, "Observation")] == [
        ["ge2023-12-31T00:00:00Z", "lt2024-01-10T00:00:00Z"],
        ["ge2024-01-10T00:00:00Z", "lt2024-01-20T00:00:00Z"],
    ]


def test_date_window_without_watermark_starts_at_the_floor(stub: FhirStub) -> None:
    stub.route("GET", "Encounter", Reply(body=bundle([])))
    client = client_for(stub)
    list(
        client.pull(
            "Encounter",
            None,
            mode="date_window",
            window=timedelta(days=5),
            floor=datetime(2024, 5, 1, tzinfo=UTC),
        )
    )
    assert [q["date"][0] for q in searches(stub, "Encounter")] == [
        "ge2024-05-01T00:00:00Z",
        "ge2024-05-06T00:00:00Z",
    ]
    stream = client.pull("Encounter", None, mode="date_window")  # no floor either: full pull
    list(stream)
    assert stream.mode == "full" and "date" not in searches(stub, "Encounter")[-1]


def test_auto_is_full_when_neither_last_updated_nor_the_date_param_is_listed(stub: FhirStub) -> None:
    stub.route("GET", "metadata", capability(res_type("QuestionnaireResponse", "subject")))
    stub.route("GET", "QuestionnaireResponse", Reply(body=bundle([qr("1")])))
    stream = client_for(stub).pull("QuestionnaireResponse", SINCE)
    list(stream)
    assert stream.mode == "full"
    assert searches(stub, "QuestionnaireResponse") == [{"_count": ["500"]}]


def test_auto_probes_when_the_type_is_absent_and_caches_the_answer(stub: FhirStub) -> None:
    stub.route("GET", "metadata", capability(res_type("Patient", "_lastUpdated")))

    def honours_last_updated(req: Recorded) -> Reply:
        value = req.query.get("_lastUpdated", [""])[0]
        if value.startswith("gt"):  # the probe: nothing is updated tomorrow
            return Reply(body=bundle([]))
        return Reply(body=bundle([qr("1")]))

    stub.route("GET", "QuestionnaireResponse", honours_last_updated)
    client = client_for(stub)
    assert client.resolve_mode("QuestionnaireResponse") == "last_updated"
    list(client.pull("QuestionnaireResponse", SINCE))
    list(client.pull("QuestionnaireResponse", SINCE))
    probes = [q for q in searches(stub, "QuestionnaireResponse") if q.get("_count") == ["1"]]
    assert probes == [{"_lastUpdated": ["gt2024-05-11T08:30:00Z"], "_count": ["1"]}]  # once, now + 1 day


def test_probe_detects_an_ignored_parameter_and_falls_back(stub: FhirStub) -> None:
    stub.route("GET", "metadata", capability())

    def ignores_last_updated_honours_authored(req: Recorded) -> Reply:
        if req.query.get("authored", [""])[0].startswith("lt1800"):
            return Reply(body=bundle([]))
        return Reply(body=bundle([qr("1")]))  # _lastUpdated ignored: the probe sees entries

    stub.route("GET", "QuestionnaireResponse", ignores_last_updated_honours_authored)
    assert client_for(stub).resolve_mode("QuestionnaireResponse") == "date_window"


def test_probe_reads_an_operation_outcome_that_says_ignored(stub: FhirStub) -> None:
    stub.route("GET", "metadata", capability())
    warning = {
        "resource": outcome(
            "Unknown search parameter '_lastUpdated'; parameter ignored", "warning", "not-supported"
        ),
        "search": {"mode": "outcome"},
    }
    stub.route("GET", "MedicationDispense", Reply(body=bundle([], extra_entries=[warning])))
    client = client_for(stub)
    assert client.param_supported("MedicationDispense", "_lastUpdated") is False
    assert client.param_supported("MedicationDispense", "whenhandedover") is True


def test_probe_400_means_unsupported(stub: FhirStub) -> None:
    stub.route("GET", "metadata", Reply(404, outcome("no metadata here")))  # unreadable capability: probe
    stub.route("GET", "Appointment", Reply(400, outcome("Unknown parameter _lastUpdated")))
    assert client_for(stub).param_supported("Appointment", "_lastUpdated") is False


def test_supports_search_param_reads_common_params() -> None:
    client = FhirClient("http://unused.invalid/fhir")
    client._capability = {
        "rest": [
            {"mode": "server", "searchParam": [{"name": "_lastUpdated"}], "resource": [{"type": "Encounter"}]}
        ]
    }
    assert client.supports_search_param("Encounter", "_lastUpdated") is True
    assert client.supports_search_param("Encounter", "date") is False
    assert client.supports_search_param("QuestionnaireResponse", "_lastUpdated") is None


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "2024-05-01T25:00:00Z", "05/01/2024"])
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_max_last_updated_skips_missing_and_bad_stamps() -> None:
    resources = [
        qr("1", updated="2024-05-02T00:00:00Z"),
        qr("2", updated="2024-05-03T00:00:00.5+01:00"),
        {"resourceType": "Patient", "id": "x"},
        qr("3", updated="garbage"),
    ]
    assert max_last_updated(resources) == datetime(2024, 5, 2, 23, 0, 0, 500000, tzinfo=UTC)
    assert max_last_updated([]) is None


def test_format_instant() -> None:
    dt = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert format_instant(dt) == "2024-05-01T12:00:00Z"
    assert format_instant(dt, milliseconds=True) == "2024-05-01T12:00:00.123Z"
    assert format_instant(datetime(2024, 5, 1, 14, tzinfo=UTC).astimezone()) == "2024-05-01T14:00:00Z"
