"""The client's answer to offset paging over changing data (`FhirClient.pull` re-reads a search whose
result set changed while it was paged), against a scripted offset-paging server: fast and exact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipelines.resources.fhir import FhirClient, RetryPolicy
from tests.support.fhir_stub import FhirStub, Recorded, Reply, bundle

COUNT = 3


def qr(rid: str, version: str = "1") -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "status": "completed",
        "meta": {"versionId": version, "lastUpdated": "2024-05-01T10:00:00Z"},
    }


class OffsetServer:
    """Live rows in server order, served by `_offset` like sekmet-fhir; `on_page` mutates the rows
    when a page is requested (the change lands between two pages of the client's read)."""

    def __init__(self, stub: FhirStub, ids: list[str]) -> None:
        self.stub = stub
        self.rows = [qr(i) for i in ids]
        self.on_page: dict[int, Callable[[OffsetServer], None]] = {}
        self.requests = 0
        stub.route("GET", "QuestionnaireResponse", self.serve)

    def serve(self, request: Recorded) -> Reply:
        self.requests += 1
        offset = int(request.query.get("_offset", ["0"])[0])
        count = int(request.query["_count"][0])
        hook = self.on_page.get(offset // count + 1)
        if hook is not None:
            hook(self)
        rows = self.rows[offset : offset + count]
        more = offset + count < len(self.rows)
        next_url = f"{self.stub.base_url}/QuestionnaireResponse?_count={count}&_offset={offset + count}"
        return Reply(body=bundle(rows, next_url=next_url if more else None, total=len(self.rows)))

    def update(self, rid: str) -> None:
        """A new version of `rid`, moved to the end of the order (sekmet bumps its sequence)."""
        row = next(r for r in self.rows if r["id"] == rid)
        self.rows.remove(row)
        self.rows.append(qr(rid, str(int(row["meta"]["versionId"]) + 1)))

    def delete(self, rid: str) -> None:
        """Remove `rid` (later rows shift one place up)."""
        self.rows = [r for r in self.rows if r["id"] != rid]

    def current(self) -> set[tuple[str, str]]:
        return {(r["id"], r["meta"]["versionId"]) for r in self.rows}


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


def client_for(stub: FhirStub) -> FhirClient:
    return FhirClient(stub.base_url, retry=RetryPolicy(sleep=lambda _s: None), page_size=COUNT)


def versions(resources: Any) -> list[tuple[str, str]]:
    return [(r["id"], r["meta"]["versionId"]) for r in resources]


IDS = [f"r{n}" for n in range(1, 10)]  # three pages of three


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.update("r1"), id="update"),
        pytest.param(lambda s: s.delete("r2"), id="delete"),
    ],
)
def test_a_plain_search_skips_the_row_at_the_page_boundary_and_pull_does_not(
    stub: FhirStub, change: Callable[[OffsetServer], None], caplog: pytest.LogCaptureFixture
) -> None:
    server = OffsetServer(stub, IDS)
    server.on_page[2] = change
    searched = versions(client_for(stub).search("QuestionnaireResponse"))
    assert ("r4", "1") not in searched  # r4 slid onto page 1 after page 1 was read: skipped

    server = OffsetServer(stub, IDS)

    def change_once(s: OffsetServer) -> None:
        change(s)
        s.on_page.clear()

    server.on_page[2] = change_once
    stream = client_for(stub).pull("QuestionnaireResponse", since=None, mode="full")
    pulled = versions(stream)
    assert server.current() <= set(pulled)
    assert len(pulled) == len(set(pulled))  # each version yielded once
    # The second pass read every current row again; all but the skipped one count as duplicates.
    assert stream.stats.duplicates == len(server.rows) - 1
    assert "read again (pass 2 of 3)" in caplog.text


def test_an_unchanged_result_set_is_read_once(stub: FhirStub) -> None:
    server = OffsetServer(stub, IDS)
    stream = client_for(stub).pull("QuestionnaireResponse", since=None, mode="full")
    assert versions(stream) == [(i, "1") for i in IDS]
    assert server.requests == 3 and stream.stats.duplicates == 0


def test_a_result_set_that_never_settles_is_read_three_times_then_reported(
    stub: FhirStub, caplog: pytest.LogCaptureFixture
) -> None:
    server = OffsetServer(stub, IDS)
    server.on_page[2] = lambda s: s.update(s.rows[0]["id"])  # every pass: someone edits a row
    stream = client_for(stub).pull("QuestionnaireResponse", since=None, mode="full")
    list(stream)
    assert server.requests == 3 * 3  # three passes of three pages, then it stops
    assert "still changing after 3 passes" in caplog.text
