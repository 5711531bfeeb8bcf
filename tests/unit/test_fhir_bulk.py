"""Bulk Data $export: kick-off, polling with Retry-After, manifest checks, downloads, DELETE, resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.resources.fhir import (
    BearerAuth,
    BulkExporter,
    FatalNetworkError,
    FhirClient,
    MemoryStateStore,
    RetryPolicy,
    TemporaryNetworkError,
)
from tests.support.fhir_stub import FhirStub, Reply, outcome

KEY = "ehr-main:bulk"
TX_TIME = "2024-05-01T12:00:00.250Z"


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


class RecordingStore(MemoryStateStore):
    """Remembers every save/clear so tests can check *when* state was persisted."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = []

    def save(self, key: str, state: dict[str, Any]) -> None:
        self.log.append(("save", dict(state)))
        super().save(key, state)

    def clear(self, key: str) -> None:
        self.log.append(("clear", key))
        super().clear(key)


def ndjson(*resources: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in resources)


PATIENTS_1 = ndjson({"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"})
PATIENTS_2 = ndjson({"resourceType": "Patient", "id": "p3"})
QRS = ndjson({"resourceType": "QuestionnaireResponse", "id": "q1"})
ERRORS = ndjson(outcome("Observation/o9 could not be serialised"))


def manifest(stub: FhirStub, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transactionTime": TX_TIME,
        "request": f"{stub.base_url}/$export?_type=Patient,QuestionnaireResponse",
        "requiresAccessToken": False,
        "output": [
            {"type": "Patient", "url": f"{stub.root_url}/files/p1.ndjson", "count": 2},
            {"type": "QuestionnaireResponse", "url": f"{stub.root_url}/files/q1.ndjson", "count": 1},
            {"type": "Patient", "url": f"{stub.root_url}/files/p2.ndjson", "count": 1},
        ],
        "error": [{"type": "OperationOutcome", "url": f"{stub.root_url}/files/err.ndjson"}],
    }
    body.update(overrides)
    return body


def serve_export(stub: FhirStub, status_replies: list[Reply]) -> None:
    stub.route("GET", "$export", Reply(202, headers={"Content-Location": f"{stub.root_url}/status/job1"}))
    stub.route("GET", "/status/job1", *status_replies)
    stub.route("DELETE", "/status/job1", Reply(202, outcome("deleted", "information")))
    for name, body in [("p1", PATIENTS_1), ("p2", PATIENTS_2), ("q1", QRS), ("err", ERRORS)]:
        stub.route("GET", f"/files/{name}.ndjson", Reply(body=body, content_type="application/fhir+ndjson"))


def exporter(stub: FhirStub, store: MemoryStateStore, sleeps: list[float], **kw: Any) -> BulkExporter:
    client = FhirClient(stub.base_url, auth=BearerAuth("bulk-token"), retry=RetryPolicy(sleep=sleeps.append))
    return BulkExporter(client, store, poll_interval=1.5, sleep=sleeps.append, **kw)


def test_full_round_trip(stub: FhirStub, tmp_path: Path) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    serve_export(
        stub,
        [
            Reply(202, headers={"Retry-After": "3", "X-Progress": "collecting 40%"}),
            Reply(202, headers={"Retry-After": later}),
            Reply(202),  # neither: poll_interval
            Reply(body=manifest(stub), content_type="application/json"),
        ],
    )
    store, sleeps = RecordingStore(), list[float]()
    result = exporter(stub, store, sleeps).export(
        KEY, ["Patient", "QuestionnaireResponse"], datetime(2024, 4, 1, 8, 30, tzinfo=UTC), tmp_path / "out"
    )

    kick = stub.calls("GET", "$export")[0]
    assert kick.query == {"_type": ["Patient,QuestionnaireResponse"], "_since": ["2024-04-01T08:30:00.000Z"]}
    assert kick.header("Prefer") == "respond-async"
    assert kick.header("Accept") == "application/fhir+json"
    assert sleeps[0] == 3.0 and 3.0 <= sleeps[1] <= 5.0 and sleeps[2] == 1.5

    assert result.transaction_time == datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    out = tmp_path / "out"
    assert result.files == {
        "Patient": [out / "Patient-1.ndjson", out / "Patient-2.ndjson"],
        "QuestionnaireResponse": [out / "QuestionnaireResponse-1.ndjson"],
    }
    assert (out / "Patient-1.ndjson").read_text() == PATIENTS_1
    assert (out / "Patient-2.ndjson").read_text() == PATIENTS_2
    assert result.counts == {"Patient": 3, "QuestionnaireResponse": 1}
    assert result.error_files == [out / "errors-1.ndjson"]
    assert (out / "errors-1.ndjson").read_text() == ERRORS
    assert result.request.endswith("$export?_type=Patient,QuestionnaireResponse")
    assert not list(out.glob("*.part"))

    # requiresAccessToken false: files fetched without our token; status polls carry it
    assert all(c.header("Authorization") is None for c in stub.calls() if c.path.startswith("/files/"))
    assert all(c.header("Authorization") == "Bearer bulk-token" for c in stub.calls("GET", "/status/job1"))

    assert len(stub.calls("DELETE", "/status/job1")) == 1
    # state persisted right after kick-off (before polling), cleared at the end
    assert store.log[0][0] == "save"
    assert store.log[0][1]["status_url"] == f"{stub.root_url}/status/job1"
    assert store.log[0][1]["kicked_off_at"]
    assert "_type=Patient" in store.log[0][1]["request"]
    assert store.log[-1] == ("clear", KEY) and store.load(KEY) is None


def test_files_get_the_token_when_required(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(body=manifest(stub, requiresAccessToken=True, error=[]))])
    exporter(stub, MemoryStateStore(), []).export(KEY, [], None, tmp_path)
    files = [c for c in stub.calls() if c.path.startswith("/files/")]
    assert files and all(c.header("Authorization") == "Bearer bulk-token" for c in files)
    assert stub.calls("GET", "$export")[0].query == {}  # no _type, no _since


def test_resume_from_a_persisted_status_url_does_not_kick_off_again(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(202, headers={"Retry-After": "2"}), Reply(body=manifest(stub))])
    store = MemoryStateStore()
    store.save(
        KEY,
        {
            "status_url": f"{stub.root_url}/status/job1",
            "kicked_off_at": "2024-05-01T11:00:00.000Z",
            "request": f"{stub.base_url}/$export",
        },
    )
    sleeps: list[float] = []
    result = exporter(stub, store, sleeps).export(KEY, ["Patient"], None, tmp_path)
    assert result.resumed
    assert stub.calls("GET", "$export") == []
    assert sleeps == [2.0]
    assert store.load(KEY) is None


@pytest.mark.parametrize(
    ("saved_types", "saved_since", "resumes"),
    [
        (["Patient"], None, True),  # everything since the beginning covers any _since
        (["Patient"], "2024-03-01T00:00:00.000Z", True),  # earlier _since: a superset
        (["Patient"], "2024-04-15T00:00:00.000Z", False),  # later _since would miss two weeks
        (["Patient", "Encounter"], None, False),  # other types: its transactionTime is not ours
    ],
)
def test_resume_only_when_the_saved_job_covers_the_request(
    stub: FhirStub, tmp_path: Path, saved_types: list[str], saved_since: str | None, resumes: bool
) -> None:
    serve_export(stub, [Reply(body=manifest(stub, error=[]))])
    store = MemoryStateStore()
    store.save(
        KEY,
        {
            "status_url": f"{stub.root_url}/status/job1",
            "request": "x",
            "types": saved_types,
            "since": saved_since,
        },
    )
    result = exporter(stub, store, []).export(KEY, ["Patient"], datetime(2024, 4, 1, tzinfo=UTC), tmp_path)
    assert result.resumed is resumes
    assert len(stub.calls("GET", "$export")) == (0 if resumes else 1)
    assert len(stub.calls("DELETE", "/status/job1")) == (1 if resumes else 2)  # cancelled, then done


def test_resume_of_a_vanished_job_kicks_off_once(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(body=manifest(stub))])
    stub.route("GET", "/status/old", Reply(404, outcome("no such job")))
    store = MemoryStateStore()
    store.save(KEY, {"status_url": f"{stub.root_url}/status/old", "request": "x"})
    result = exporter(stub, store, []).export(KEY, ["Patient"], None, tmp_path)
    assert len(stub.calls("GET", "$export")) == 1
    assert result.files["Patient"]


def test_still_running_after_max_wait_keeps_state_for_the_next_run(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(202, headers={"Retry-After": "10", "X-Progress": "busy"})])
    store, sleeps = MemoryStateStore(), list[float]()
    with pytest.raises(TemporaryNetworkError, match="still running"):
        exporter(stub, store, sleeps, max_wait=25).export(KEY, ["Patient"], None, tmp_path)
    assert sleeps == [10.0, 10.0, 5.0]  # the last wait is cut to what remains of max_wait
    assert store.load(KEY)["status_url"].endswith("/status/job1")  # type: ignore[index]
    assert stub.calls("DELETE") == []


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"transactionTime": None}, "no transactionTime"),
        ({"transactionTime": "yesterday"}, "not an instant"),
        ({"output": {"type": "Patient"}}, "output is not a list"),
        ({"output": [{"type": "Patient"}]}, r"output\[0\] lacks type or url"),
        ({"output": [{"type": "../../etc", "url": "http://x/f"}]}, "not a resource type"),
        ({"output": [{"type": "Patient", "url": "file:///etc/passwd"}]}, "not an absolute http"),
        ({"error": "none"}, "error is not a list"),
        ({"requiresAccessToken": "yes"}, "requiresAccessToken"),
    ],
)
def test_malformed_manifest_is_a_clear_fatal_error(
    stub: FhirStub, tmp_path: Path, overrides: dict[str, Any], match: str
) -> None:
    serve_export(stub, [Reply(body=manifest(stub, **overrides))])
    with pytest.raises(FatalNetworkError, match="malformed bulk manifest: .*" + match):
        exporter(stub, MemoryStateStore(), []).export(KEY, ["Patient"], None, tmp_path)
    assert not [c for c in stub.calls() if c.path.startswith("/files/")]


def test_kick_off_must_answer_202_with_content_location(stub: FhirStub, tmp_path: Path) -> None:
    stub.route("GET", "$export", Reply(202))
    with pytest.raises(FatalNetworkError, match="no Content-Location"):
        exporter(stub, MemoryStateStore(), []).export(KEY, ["Patient"], None, tmp_path)
    stub.route("GET", "$export", Reply(400, outcome("_type Foo is not supported")))
    with pytest.raises(FatalNetworkError, match="_type Foo is not supported"):
        exporter(stub, MemoryStateStore(), []).export(KEY, ["Patient"], None, tmp_path)


def test_failed_job_clears_state(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(400, outcome("export failed: out of disk"))])
    store = MemoryStateStore()
    with pytest.raises(FatalNetworkError, match="out of disk"):
        exporter(stub, store, []).export(KEY, ["Patient"], None, tmp_path)
    assert store.load(KEY) is None


def test_status_5xx_is_retried_like_any_request(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(503, headers={"Retry-After": "1"}), Reply(body=manifest(stub))])
    sleeps: list[float] = []
    exporter(stub, MemoryStateStore(), sleeps).export(KEY, ["Patient"], None, tmp_path)
    assert sleeps == [1.0]


def test_expired_file_clears_state(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(body=manifest(stub))])
    stub.route("GET", "/files/q1.ndjson", Reply(404, outcome("expired")))
    store = MemoryStateStore()
    with pytest.raises(FatalNetworkError, match="expired or gone"):
        exporter(stub, store, []).export(KEY, ["Patient"], None, tmp_path)
    assert store.load(KEY) is None


def test_download_survives_a_connection_reset(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(body=manifest(stub, error=[]))])
    stub.route("GET", "/files/p1.ndjson", Reply(reset=True), Reply(body=PATIENTS_1))
    result = exporter(stub, MemoryStateStore(), []).export(KEY, ["Patient"], None, tmp_path)
    assert result.files["Patient"][0].read_text() == PATIENTS_1


def test_download_cut_off_mid_body_is_restarted(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(body=manifest(stub, error=[]))])
    stub.route("GET", "/files/q1.ndjson", Reply(body=QRS * 50, truncate=True), Reply(body=QRS * 50))
    sleeps: list[float] = []
    result = exporter(stub, MemoryStateStore(), sleeps).export(KEY, ["Patient"], None, tmp_path)
    assert result.files["QuestionnaireResponse"][0].read_text() == QRS * 50
    assert result.counts["QuestionnaireResponse"] == 50
    assert len(stub.calls("GET", "/files/q1.ndjson")) == 2 and len(sleeps) == 1


def test_delete_404_or_405_does_not_fail_the_export(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(stub, [Reply(body=manifest(stub, error=[]))])
    stub.route("DELETE", "/status/job1", Reply(405, outcome("DELETE not supported")))
    store = MemoryStateStore()
    result = exporter(stub, store, []).export(KEY, ["Patient"], None, tmp_path)
    assert result.files and store.load(KEY) is None


def test_deleted_files_are_downloaded_too(stub: FhirStub, tmp_path: Path) -> None:
    serve_export(
        stub,
        [
            Reply(
                body=manifest(
                    stub, error=[], deleted=[{"type": "Bundle", "url": f"{stub.root_url}/files/q1.ndjson"}]
                )
            )
        ],
    )
    result = exporter(stub, MemoryStateStore(), []).export(KEY, ["Patient"], None, tmp_path)
    assert result.deleted_files == [tmp_path / "deleted-1.ndjson"]


def test_group_and_patient_levels(stub: FhirStub, tmp_path: Path) -> None:
    stub.route(
        "GET", "Group/g1/$export", Reply(202, headers={"Content-Location": f"{stub.root_url}/status/job1"})
    )
    serve_export(stub, [Reply(body=manifest(stub, error=[]))])
    exporter(stub, MemoryStateStore(), []).export(KEY, [], None, tmp_path, level="group", group_id="g1")
    assert len(stub.calls("GET", "Group/g1/$export")) == 1
    with pytest.raises(ValueError, match="group_id"):
        exporter(stub, MemoryStateStore(), []).export(KEY, [], None, tmp_path, level="group")
    with pytest.raises(ValueError, match="resource type"):
        exporter(stub, MemoryStateStore(), []).export(KEY, ["Patient,Observation"], None, tmp_path)
