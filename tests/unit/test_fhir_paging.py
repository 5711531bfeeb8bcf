"""Search paging: next links verbatim, stop rules, loop protection, de-duplication and stats."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.resources.fhir import FatalNetworkError, FhirClient, FhirError, RetryPolicy
from tests.support.fhir_stub import FhirStub, Recorded, Reply, bundle, outcome


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


def qr(rid: str, version: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "status": "completed",
        "meta": {"versionId": version, "lastUpdated": "2024-05-01T10:00:00Z"},
        **extra,
    }


def client_for(stub: FhirStub, **kw: Any) -> FhirClient:
    return FhirClient(stub.base_url, retry=RetryPolicy(sleep=lambda _s: None), **kw)


def cursor_pages(stub: FhirStub, pages: dict[str, dict[str, Any]]) -> None:
    """Serve `/fhir/page?cursor=<key>` from `pages`."""

    def serve(req: Recorded) -> Reply:
        return Reply(body=pages[req.query["cursor"][0]])

    stub.route("GET", "page", serve)


def test_next_links_followed_verbatim_across_path_and_host_forms(stub: FhirStub) -> None:
    # Page 2 lives on another path with an opaque cursor; page 3 names the host as `localhost`
    # and carries parameters of its own. None of our parameters may be re-added.
    page2 = f"{stub.base_url}/page?cursor=b&_getpagesoffset=7&weird=a%7Cb"
    page3 = f"http://localhost:{stub.port}/fhir/page?cursor=c&_count=3"
    stub.route(
        "GET", "QuestionnaireResponse", Reply(body=bundle([qr("1"), qr("2")], next_url=page2, total=5))
    )
    cursor_pages(stub, {"b": bundle([qr("3"), qr("4")], next_url=page3), "c": bundle([qr("5")])})
    client = client_for(stub, page_size=2)

    pages = list(client.search_pages("QuestionnaireResponse", {"status": "completed"}))

    assert [p.number for p in pages] == [1, 2, 3]
    assert [len(p.resources) for p in pages] == [2, 2, 1]
    assert pages[0].total == 5 and pages[1].url == page2 and pages[2].url == page3
    first, second, third = stub.calls("GET")
    assert first.raw_query == "status=completed&_count=2"
    assert second.target == "/fhir/page?cursor=b&_getpagesoffset=7&weird=a%7Cb"
    assert third.target == "/fhir/page?cursor=c&_count=3"
    assert third.header("Host") == f"localhost:{stub.port}"


def test_explicit_count_is_not_duplicated(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(body=bundle([])))
    list(client_for(stub).search_pages("Patient", [("_count", "10"), ("name", "a"), ("name", "b")]))
    assert stub.calls()[0].raw_query == "_count=10&name=a&name=b"


def test_empty_page_with_a_next_link_stops(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(body=bundle([qr("1")], next_url=f"{stub.base_url}/page?cursor=b")))
    cursor_pages(stub, {"b": bundle([], next_url=f"{stub.base_url}/page?cursor=c"), "c": bundle([qr("9")])})
    resources = list(client_for(stub).search("Patient"))
    assert [r["id"] for r in resources] == ["1"]
    assert len(stub.calls("GET")) == 2  # cursor=c was never requested


@pytest.mark.parametrize(
    "links",
    [
        None,  # no link element at all
        [{"relation": "self", "url": "http://x/fhir/Patient"}],
        [{"relation": "next", "url": ""}],  # a next link to nothing
        [{"relation": "next"}],
    ],
)
def test_no_usable_next_link_stops(stub: FhirStub, links: list[dict[str, str]] | None) -> None:
    body = bundle([qr("1")])
    if links is None:
        del body["link"]
    else:
        body["link"] = links
    stub.route("GET", "Patient", Reply(body=body))
    assert [r["id"] for r in client_for(stub).search("Patient")] == ["1"]
    assert len(stub.calls()) == 1


def test_repeated_next_link_is_an_error_after_yielding_what_was_fetched(stub: FhirStub) -> None:
    first = f"{stub.base_url}/Patient?_count=500"
    stub.route("GET", "Patient", Reply(body=bundle([qr("1")], next_url=f"{stub.base_url}/page?cursor=b")))
    cursor_pages(stub, {"b": bundle([qr("2")], next_url=first)})  # loops back to page 1
    seen: list[str] = []
    with pytest.raises(FhirError, match="repeats a page already fetched"):
        for resource in client_for(stub).search("Patient"):
            seen.append(resource["id"])
    assert seen == ["1", "2"]
    assert len(stub.calls()) == 2


def test_max_pages_caps_a_next_link_loop(stub: FhirStub) -> None:
    counter = iter(range(1, 10_000))

    def endless(req: Recorded) -> Reply:  # always a fresh cursor: only the cap stops this
        n = next(counter)
        return Reply(body=bundle([qr(f"r{n}")], next_url=f"{stub.base_url}/Patient?cursor={n}"))

    stub.route("GET", "Patient", endless)
    with pytest.raises(FhirError, match=r"more than max_pages=5 pages.*next-link loop"):
        list(client_for(stub, max_pages=5).search("Patient"))
    assert len(stub.calls()) == 5


def test_duplicates_across_pages_are_yielded_once(stub: FhirStub) -> None:
    p1 = [qr("a"), qr("b")]
    p2 = [qr("b"), qr("a", version="2")]  # b again (offset paging shifted); a's new version is new
    stub.route(
        "GET", "QuestionnaireResponse", Reply(body=bundle(p1, next_url=f"{stub.base_url}/page?cursor=2"))
    )
    cursor_pages(
        stub,
        {
            "2": bundle(p2, next_url=f"{stub.base_url}/page?cursor=3"),
            "3": bundle(p1, next_url=f"{stub.base_url}/page?cursor=4"),  # a repeated page
            "4": bundle([qr("c")]),
        },
    )
    stream = client_for(stub).search("QuestionnaireResponse")
    got = [(r["id"], r["meta"]["versionId"]) for r in stream]
    assert got == [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1")]
    s = stream.stats
    assert (s.pages, s.fetched, s.yielded, s.duplicates) == (4, 7, 4, 3)
    assert s.bytes > 0 and s.seconds > 0 and s.rate > 0


def test_resources_without_version_id_dedupe_on_last_updated(stub: FhirStub) -> None:
    a1 = {"resourceType": "Patient", "id": "a", "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}}
    a2 = {"resourceType": "Patient", "id": "a", "meta": {"lastUpdated": "2024-02-01T00:00:00Z"}}
    stub.route("GET", "Patient", Reply(body=bundle([a1, a1, a2])))
    assert len(list(client_for(stub).search("Patient"))) == 2


def test_include_and_outcome_entries_are_skipped_but_counted(
    stub: FhirStub, caplog: pytest.LogCaptureFixture
) -> None:
    extra: list[dict[str, Any]] = [
        {"resource": {"resourceType": "Questionnaire", "id": "q"}, "search": {"mode": "include"}},
        {
            "resource": outcome(
                "Unknown search parameter 'questionnaire'; parameter ignored", "warning", "not-supported"
            ),
            "search": {"mode": "outcome"},
        },
        {"resource": outcome("no mode either", "information")},
        {"fullUrl": "urn:x"},  # an entry without a resource
    ]
    stub.route("GET", "QuestionnaireResponse", Reply(body=bundle([qr("1")], extra_entries=extra)))
    caplog.set_level(logging.INFO, logger="alliance_qi.fhir")
    stream = client_for(stub).search("QuestionnaireResponse", {"questionnaire": "x"})
    assert [r["resourceType"] for r in stream] == ["QuestionnaireResponse"]
    assert (stream.stats.fetched, stream.stats.skipped, stream.stats.yielded) == (5, 4, 1)
    # the server told us the filter was not applied: said at INFO (the client filters itself)
    assert [r.levelno for r in caplog.records if "parameter ignored" in r.getMessage()] == [logging.INFO]


def test_entries_without_search_mode_are_matches(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(body=bundle([qr("1"), qr("2")], mode=None)))
    assert len(list(client_for(stub).search("Patient"))) == 2


def test_relative_next_link_is_resolved_against_the_page(stub: FhirStub) -> None:
    stub.route("GET", "Patient", Reply(body=bundle([qr("1")], next_url="page?cursor=b")))
    cursor_pages(stub, {"b": bundle([qr("2")])})
    assert [r["id"] for r in client_for(stub).search("Patient")] == ["1", "2"]
    assert stub.calls()[1].target == "/fhir/page?cursor=b"


def test_progress_is_logged_every_n_pages(stub: FhirStub, caplog: pytest.LogCaptureFixture) -> None:
    stub.route("GET", "Patient", Reply(body=bundle([qr("1")], next_url=f"{stub.base_url}/page?cursor=b")))
    cursor_pages(stub, {"b": bundle([qr("2")])})
    caplog.set_level(logging.INFO, logger="alliance_qi.fhir")
    list(client_for(stub, log_every_pages=1).search("Patient"))
    assert "Patient: 1 pages, 0 resources" in caplog.text
    assert "Patient: 2 pages, 1 resources" in caplog.text
    assert "done, 2 pages, 2 resources" in caplog.text


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (Reply(body=outcome("oops", "information")), "expected a Bundle, got 'OperationOutcome'"),
        (Reply(body="<html>login</html>", content_type="text/html"), "not JSON"),
        (Reply(body=[1, 2]), "not an object"),
    ],
)
def test_non_bundle_answers_are_fatal(stub: FhirStub, reply: Reply, match: str) -> None:
    stub.route("GET", "Patient", reply)
    with pytest.raises(FatalNetworkError, match=match):
        list(client_for(stub).search("Patient"))


def test_resource_type_is_validated(stub: FhirStub) -> None:
    with pytest.raises(ValueError, match="not a FHIR resource type"):
        list(client_for(stub).search_pages("../metadata"))


# ---------------------------------------------------------------- read and canonical resolution
# (they page through searches too, so they live here)

PHQ9 = "http://loinc.org/q/44249-1"


def questionnaire(
    qid: str, url: str | None, version: str | None, updated: str = "2024-01-01T00:00:00Z"
) -> dict[str, Any]:
    q: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": qid,
        "meta": {"versionId": "1", "lastUpdated": updated},
    }
    if url:
        q["url"] = url
    if version:
        q["version"] = version
    return q


def test_read_relative_absolute_and_missing(stub: FhirStub) -> None:
    stub.route("GET", "Questionnaire/phq9", Reply(body=questionnaire("phq9", PHQ9, "2.0")))
    stub.route("GET", "Questionnaire/gone", Reply(410, outcome("deleted")))
    client = client_for(stub)
    assert client.read("Questionnaire/phq9")["id"] == "phq9"  # type: ignore[index]
    assert client.read(f"{stub.base_url}/Questionnaire/phq9")["id"] == "phq9"  # type: ignore[index]
    assert client.read("Questionnaire/missing") is None
    assert client.read("Questionnaire/gone") is None
    with pytest.raises(ValueError, match="not on this server"):
        client.read("https://elsewhere.example/fhir/Questionnaire/phq9")
    with pytest.raises(ValueError, match="contained"):
        client.read("#q1")
    with pytest.raises(ValueError, match="literal reference"):
        client.read("Questionnaire?url=x")


def test_resolve_canonical_filters_on_the_client_and_picks_the_latest(stub: FhirStub) -> None:
    # The server ignores `url`/`version` and returns every Questionnaire it has.
    everything = [
        questionnaire("a", PHQ9, "2.0.0-beta"),
        questionnaire("b", PHQ9, "10.1"),
        questionnaire("c", PHQ9, "9.9"),
        questionnaire("d", "http://example.org/q/srs", "10.1"),
        questionnaire("e", PHQ9, "10.1", updated="2024-06-01T00:00:00Z"),  # same version, newer copy
        questionnaire("f", PHQ9, None),
    ]
    stub.route("GET", "Questionnaire", Reply(body=bundle(everything)))
    client = client_for(stub)
    assert client.resolve_canonical("Questionnaire", PHQ9)["id"] == "e"  # type: ignore[index]
    assert client.resolve_canonical("Questionnaire", f"{PHQ9}|9.9")["id"] == "c"  # type: ignore[index]
    assert client.resolve_canonical("Questionnaire", f"{PHQ9}|3") is None
    assert client.resolve_canonical("Questionnaire", "http://example.org/none") is None
    assert client.resolve_canonical("Questionnaire", "#contained") is None
    queries = [c.query for c in stub.calls("GET", "Questionnaire")]
    assert {"url": [PHQ9], "version": ["9.9"], "_count": ["500"]} in queries
    before = len(stub.calls())
    client.resolve_canonical("Questionnaire", PHQ9)
    assert len(stub.calls()) == before  # cached


def test_resolve_canonical_by_server_reference(stub: FhirStub) -> None:
    stub.route("GET", "Questionnaire/local-1", Reply(body=questionnaire("local-1", None, None)))
    client = client_for(stub)
    by_reference = client.resolve_canonical("Questionnaire", "Questionnaire/local-1")
    by_url = client.resolve_canonical("Questionnaire", f"{stub.base_url}/Questionnaire/local-1")
    assert by_reference is not None and by_reference["id"] == "local-1"
    assert by_url is not None and by_url["id"] == "local-1"
    assert stub.calls("GET", "Questionnaire") == []  # read by id, no search


def test_version_ordering() -> None:
    from pipelines.resources.fhir.client import _version_key

    ordered = ["", "1", "1.2", "1.10", "2.0.0-alpha", "2.0.0-beta", "2.0.0", "2.0.1", "10"]
    assert sorted(ordered, key=_version_key) == ordered


# ---------------------------------------------------------------- property: paging is exact


@pytest.fixture(scope="module")
def shared_stub() -> Iterator[FhirStub]:
    with FhirStub() as s:
        yield s


@settings(max_examples=25, deadline=None)
@given(
    pages=st.lists(
        st.lists(st.tuples(st.sampled_from("abcdefgh"), st.sampled_from("123")), max_size=6),
        min_size=1,
        max_size=6,
    )
)
def test_search_yields_each_version_once_in_first_seen_order(
    shared_stub: FhirStub, pages: list[list[tuple[str, str]]]
) -> None:
    stub = shared_stub
    stub.requests.clear()
    bodies = {}
    for n, page in enumerate(pages):
        next_url = f"{stub.base_url}/page?cursor={n + 1}" if n + 1 < len(pages) else None
        bodies[str(n)] = bundle([qr(rid, version) for rid, version in page], next_url=next_url)
    stub.route("GET", "Patient", Reply(body=bodies["0"]))
    cursor_pages(stub, bodies)

    stream = client_for(stub).search("Patient")
    got = [(r["id"], r["meta"]["versionId"]) for r in stream]

    # the client stops at the first page without entries, even if a next link follows
    served: list[list[tuple[str, str]]] = []
    for page in pages:
        served.append(page)
        if not page:
            break
    expected = list(dict.fromkeys(item for page in served for item in page))
    assert got == expected
    assert stream.stats.pages == len(served)
    assert stream.stats.yielded + stream.stats.duplicates == sum(len(p) for p in served)
