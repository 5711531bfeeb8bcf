"""Transport and paging faults between the pipeline and a real FHIR server, injected by the proxy.

Each test runs the real raw pipeline (Dagster, every raw asset) through the proxy into a fresh
warehouse and compares it with the clean run's: same (id, version_id, content_sha256) in every raw
table, same rejections, no duplicate rows, every `raw.fetch_log` row reconciled.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests

from demo.server import FhirServer
from pipelines.resources.fhir import FhirClient
from pipelines.settings import RESOURCE_TYPES
from tests.faults import support
from tests.faults.proxy import (
    Delay,
    FaultProxy,
    Hook,
    RepeatEntries,
    Replay,
    Reply,
    Reset,
    Truncate,
    running_proxy,
)
from tests.faults.support import page_query, run_raw, snapshot, source, step_errors

QR = r"/fhir/QuestionnaireResponse$"
ENCOUNTER = r"/fhir/Encounter$"

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts FHIR server processes


def _statuses(proxy: FaultProxy, path: str, page: int) -> list[int | None]:
    query = page_query(page)
    return [e.status for e in proxy.seen(path) if all(e.params.get(k) == v for k, v in query.items())]


def _redacted(message: str) -> None:
    """An error names the URL but no query value (they can identify patients)."""
    assert re.search(r"https?://127\.0\.0\.1:\d+/fhir/\w+", message), message
    assert "_offset=…" in message and not re.search(r"_offset=\d", message), message


@pytest.mark.parametrize(
    "retry_after",
    [
        pytest.param(lambda: {"Retry-After": "1"}, id="seconds"),
        pytest.param(
            lambda: {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)},
            id="http-date",
        ),
    ],
)
def test_429_with_retry_after_is_waited_out(tmp_path: Path, proxy: FaultProxy, clean, retry_after) -> None:
    rule = proxy.add(Reply(429, retry_after), QR, query=page_query(3), times=2)
    result = run_raw(source(proxy.base_url), tmp_path / "w.duckdb")
    assert result.success
    assert rule.fired == 2 and _statuses(proxy, QR, 3) == [429, 429, 200]
    # Retry-After was honoured: the retries came after the server's wait, not at once.
    page3 = [e for e in proxy.seen(QR) if e.params.get("_offset") == page_query(3)["_offset"]]
    gaps = [b.at - a.at for a, b in itertools.pairwise(page3)]
    assert all(gap >= 0.5 for gap in gaps), gaps
    snapshot(tmp_path / "w.duckdb").assert_equals(clean)


def test_503_burst_is_retried(tmp_path: Path, proxy: FaultProxy, clean) -> None:
    proxy.add(Reply(503), ENCOUNTER, query=page_query(2), times=3)
    result = run_raw(source(proxy.base_url), tmp_path / "w.duckdb")
    assert result.success
    assert _statuses(proxy, ENCOUNTER, 2) == [503, 503, 503, 200]
    snapshot(tmp_path / "w.duckdb").assert_equals(clean)


def test_503_beyond_the_retry_budget_fails_clearly_and_a_rerun_recovers(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    proxy.add(Reply(503), ENCOUNTER, query=page_query(2), times=None)
    failed = run_raw(source(proxy.base_url, retry_max_total_wait_s=1.5), warehouse)
    assert not failed.success
    errors = step_errors(failed)
    assert set(errors) == {"raw__encounter"}, errors  # the other types landed
    assert len(errors["raw__encounter"]) == 3  # the step was attempted 1 + 2 retries times
    for message in errors["raw__encounter"]:
        assert "still failing (HTTP 503)" in message and "Encounter" in message
        _redacted(message)
    after_failure = snapshot(warehouse)
    after_failure.assert_sound()
    # Nothing of the failed pull counts as done: no watermark, no fetch_log row for Encounter.
    assert "Encounter" not in after_failure.watermarks
    assert all(r[1] != "Encounter" for r in after_failure.fetch_log)

    proxy.clear()
    assert run_raw(source(proxy.base_url), warehouse).success
    snapshot(warehouse).assert_equals(clean)


def test_read_timeout_is_retried(tmp_path: Path, proxy: FaultProxy, clean) -> None:
    rule = proxy.add(Delay(3.0), QR, query=page_query(2))
    result = run_raw(source(proxy.base_url, timeout_read_s=1.0), tmp_path / "w.duckdb")
    assert result.success and rule.fired == 1
    assert len(_statuses(proxy, QR, 2)) == 2  # the slow answer was abandoned and the page asked again
    snapshot(tmp_path / "w.duckdb").assert_equals(clean)


@pytest.mark.parametrize("mid_body", [False, True], ids=["before-answer", "mid-body"])
def test_connection_reset_is_retried(tmp_path: Path, proxy: FaultProxy, clean, mid_body: bool) -> None:
    rule = proxy.add(Reset(mid_body=mid_body), QR, query=page_query(2))
    result = run_raw(source(proxy.base_url), tmp_path / "w.duckdb")
    assert result.success and rule.fired == 1
    assert _statuses(proxy, QR, 2) == [None, 200]
    snapshot(tmp_path / "w.duckdb").assert_equals(clean)


def test_truncated_json_page_once_recovers(tmp_path: Path, proxy: FaultProxy, clean) -> None:
    rule = proxy.add(Truncate(0.5), QR, query=page_query(3))
    result = run_raw(source(proxy.base_url), tmp_path / "w.duckdb")
    assert result.success and rule.fired == 1
    snapshot(tmp_path / "w.duckdb").assert_equals(clean)


def test_truncated_json_every_time_fails_clearly_and_a_rerun_recovers(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    proxy.add(Truncate(0.5), QR, query=page_query(3), times=None)
    failed = run_raw(source(proxy.base_url, retry_max_total_wait_s=1.5), warehouse)
    assert not failed.success
    errors = step_errors(failed)
    assert set(errors) == {"raw__questionnaire_response"}, errors
    for message in errors["raw__questionnaire_response"]:
        assert "QuestionnaireResponse" in message and "JSON" in message, message
        _redacted(message)
    snap = snapshot(warehouse)
    snap.assert_sound()
    assert "QuestionnaireResponse" not in snap.watermarks

    proxy.clear()
    assert run_raw(source(proxy.base_url), warehouse).success
    snapshot(warehouse).assert_equals(clean)


def test_page_served_twice_with_the_same_next_link(tmp_path: Path, proxy: FaultProxy, clean) -> None:
    # Page 3 is answered with page 2 again, whose next link points at page 3: a paging loop.
    rule = proxy.add(Replay(), QR, query=page_query(3))
    result = run_raw(source(proxy.base_url), tmp_path / "w.duckdb")
    assert result.success and rule.fired == 1
    retried = step_errors(result)["raw__questionnaire_response"]
    assert len(retried) == 1 and "repeats a page already fetched" in retried[0], retried
    _redacted(retried[0])
    snapshot(tmp_path / "w.duckdb").assert_equals(clean)


def test_entries_repeated_across_pages_are_counted_as_duplicates(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    rule = proxy.add(RepeatEntries(), QR, query=page_query(3))
    result = run_raw(source(proxy.base_url), tmp_path / "w.duckdb")
    assert result.success and rule.fired == 1
    snap = snapshot(tmp_path / "w.duckdb")
    snap.assert_equals(clean)
    qr_log = [r for r in snap.fetch_log if r[1] == "QuestionnaireResponse"]
    assert len(qr_log) == 1 and qr_log[0][7] == support.PAGE_SIZE  # page 2's entries, once more


class UpdateBetweenPages:
    """A hook: update (on the server itself) the first resource of the page the proxy served last,
    i.e. a resource the client has already read, so it moves to the end of the server's order."""

    def __init__(self, proxy: FaultProxy, upstream_base: str) -> None:
        self.proxy = proxy
        self.base = upstream_base
        self.updated: list[tuple[str, str]] = []  # (id, versionId) as first read

    def __call__(self) -> None:
        previous = self.proxy.last_answer["/fhir/QuestionnaireResponse"].json()
        resource = previous["entry"][0]["resource"]
        self.updated.append((resource["id"], resource["meta"]["versionId"]))
        changed = {k: v for k, v in resource.items() if k != "meta"}
        changed["language"] = "en" if changed.get("language") != "en" else "en-GB"
        response = requests.put(
            f"{self.base}/QuestionnaireResponse/{resource['id']}",
            json=changed,
            headers={"Content-Type": "application/fhir+json"},
            timeout=10,
        )
        response.raise_for_status()


def _server_versions(base: str) -> set[tuple[str, str]]:
    """Every current QuestionnaireResponse version on the server, read as one page (nothing moves)."""
    bundle = requests.get(f"{base}/QuestionnaireResponse", params={"_count": "1000"}, timeout=10).json()
    assert bundle["total"] == len(bundle["entry"])
    return {(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in bundle["entry"]}


def test_client_pull_reads_a_search_again_when_it_changed_while_paged(
    fresh_upstream: FhirServer, log_journal, caplog: pytest.LogCaptureFixture
) -> None:
    """The hazard is real on this server (a plain search loses a row), and `pull` recovers it."""
    base = fresh_upstream.base_url
    with running_proxy(base) as proxy:
        log_journal.proxies.append(proxy)
        client = FhirClient(proxy.base_url, page_size=support.PAGE_SIZE)
        hook = UpdateBetweenPages(proxy, base)

        proxy.add(Hook(hook), QR, query=page_query(2))
        searched = {(r["id"], r["meta"]["versionId"]) for r in client.search("QuestionnaireResponse")}
        lost = _server_versions(base) - searched
        assert len(lost) == 1, lost  # the row at the page boundary slid onto the page already read

        proxy.add(Hook(hook), QR, query=page_query(2))
        stream = client.pull("QuestionnaireResponse", since=None)
        pulled = {(r["id"], r["meta"]["versionId"]) for r in stream}
    assert _server_versions(base) <= pulled  # nothing lost
    assert hook.updated[1] in pulled  # and the version read before the update is kept too
    assert stream.stats.duplicates >= len(pulled) - 2  # the second pass re-read the whole search
    assert "the result set changed while it was paged" in caplog.text


def test_resource_updated_between_pages_loses_nothing(
    tmp_path: Path, fresh_upstream: FhirServer, log_journal
) -> None:
    """Offset paging while the data changes, through the whole pipeline."""
    base = fresh_upstream.base_url
    warehouse = tmp_path / "w.duckdb"
    with running_proxy(base) as proxy:
        log_journal.proxies.append(proxy)
        hook = UpdateBetweenPages(proxy, base)
        rule = proxy.add(Hook(hook), QR, query=page_query(2))
        assert run_raw(source(proxy.base_url), warehouse).success
        assert rule.fired == 1
    faulted = snapshot(warehouse)
    faulted.assert_sound()

    # The clean reference: a clean run against the server as it is now (after the update).
    final = tmp_path / "final.duckdb"
    assert run_raw(source(base), final).success
    clean_final = snapshot(final)
    qr = "QuestionnaireResponse"
    missing = clean_final.versions(qr) - faulted.versions(qr)
    assert not missing, f"lost while paging: {sorted(missing)}"
    # Besides everything the clean run has, the faulted run kept the version it read first.
    assert faulted.versions(qr) - clean_final.versions(qr) == set(hook.updated)
    assert faulted.rejected == clean_final.rejected
    for other in RESOURCE_TYPES:
        if other != qr:
            assert faulted.rows[other] == clean_final.rows[other], other
    # The re-read shows in raw.fetch_log as duplicates, and the pull still reconciles.
    qr_log = [r for r in faulted.fetch_log if r[1] == qr]
    assert len(qr_log) == 1 and qr_log[0][7] > 0
