"""A hostile or broken FHIR server (issue 12, part 2): the pipeline against the fault proxy.

Each test runs the real raw pipeline (Dagster, production retry count) through the fault proxy in
front of a real sekmet-fhir process. A second proxy in front of the same server plays "another
origin" (another host): it records every request and every bearer token it receives, so a test
can prove that no credential went there. Tokens are static bearer tokens (sekmet, without auth,
ignores them; the proxies record them all), registered with the log journal so that any log line
that shows one fails the test.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import orjson
import pytest

from demo.server import FhirServer
from pipelines.extract import SourceSpec, resolve_referenced_questionnaires
from pipelines.resources.fhir import AuthError, BearerAuth, FhirClient, RetryPolicy
from pipelines.sqlfiles import install_shared_macros
from pipelines.warehouse import Warehouse
from quality_checks.structural import StructuralValidator
from tests.faults.proxy import FaultProxy, Mutate, Reply, Rewrite, running_proxy
from tests.faults.support import (
    SOURCE,
    LogJournal,
    event_text,
    landing_file,
    page_query,
    run_raw,
    snapshot,
    source,
    step_errors,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QR = r"/fhir/QuestionnaireResponse$"
ENCOUNTER = r"/fhir/Encounter$"
STATUS = r"/fhir/bulk-status/"
KICK_OFF = r"/fhir/\$export$"
QR_FILE = r"/fhir/bulk-files/.*/QuestionnaireResponse\.ndjson$"
QR_TYPE = ("QuestionnaireResponse",)
DEEP_ID = "deep-nested"
#: The first search page (Encounter has two pages of 40; the rule fires on the first match).
FIRST_PAGE = {"_count": "40"}


@pytest.fixture
def other(upstream: FhirServer, log_journal: LogJournal) -> Iterator[FaultProxy]:
    """Another origin (a second proxy, on another port, in front of the same server)."""
    with running_proxy(upstream.base_url) as p:
        log_journal.proxies.append(p)
        yield p


@pytest.fixture
def token(log_journal: LogJournal) -> str:
    """A static bearer token for the test, registered as a secret no log line may show."""
    value = "hostile-" + secrets.token_hex(16)
    log_journal.extra_secrets.add(value)
    return value


def _bulk(proxy: FaultProxy, tmp_path: Path, **overrides: Any) -> Any:
    config: dict[str, Any] = {
        "kind": "bulk",
        "landing_dir": str(tmp_path / "bulk"),
        "bulk_poll_interval_s": 0.2,
    }
    config.update(overrides)
    return source(proxy.base_url, **config)


def _next_link_to(old: str, new: str) -> Callable[[Any], Any]:
    def rewrite(bundle: Any) -> Any:
        for link in bundle.get("link") or []:
            if link.get("relation") == "next":
                link["url"] = str(link["url"]).replace(old, new)
        return bundle

    return rewrite


def _deep_response(levels: int) -> bytes:
    """A QuestionnaireResponse with `levels` levels of nested items: valid JSON, ~2 x levels deep."""
    inner = b'{"linkId":"leaf","answer":[{"valueString":"x"}]}'
    for level in range(levels):
        inner = b'{"linkId":"l%d","item":[%s]}' % (level, inner)
    return (
        b'{"resourceType":"QuestionnaireResponse","id":"' + DEEP_ID.encode() + b'","status":"completed",'
        b'"meta":{"versionId":"1","lastUpdated":"2020-01-01T00:00:00Z"},'
        b'"questionnaire":"http://example.org/Questionnaire/deep","item":[' + inner + b"]}"
    )


def _with_entry(resource: bytes) -> Callable[[bytes], bytes]:
    """Put `resource` (raw bytes) as the first entry of a searchset page."""

    def rewrite(body: bytes) -> bytes:
        match = re.search(rb'"entry"\s*:\s*\[', body)
        assert match, "the page has no entries"
        entry = b'{"fullUrl":"urn:uuid:x","resource":' + resource + b',"search":{"mode":"match"}},'
        return body[: match.end()] + entry + body[match.end() :]

    return rewrite


def _rejected(warehouse: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(
            "SELECT resource_type, id, reason, resource_text, origin FROM raw.rejected ORDER BY reason"
        ).fetchall()


def _pages(proxy: FaultProxy) -> list[Any]:
    """QuestionnaireResponse search pages requested (not the `_count=1` support probe)."""
    return [e for e in proxy.seen(QR) if e.params.get("_count") == "40"]


def _files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


# ---------------------------------------------------------------- 1. credentials and origins


def test_cross_origin_next_link_gets_no_credential_and_fails_once_naming_the_origin(
    tmp_path: Path, proxy: FaultProxy, other: FaultProxy, token: str, log_journal: LogJournal, clean
) -> None:
    proxy.add(Mutate(_next_link_to(proxy.origin, other.origin)), ENCOUNTER, query=FIRST_PAGE)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(source(proxy.base_url, auth_mode="bearer", token=token), warehouse)
    log_journal.add_text(event_text(result))
    assert not result.success
    errors = step_errors(result)
    assert set(errors) == {"raw__encounter"}, errors
    # Fatal: one attempt, no step retry (a retry would follow the same link again).
    assert len(errors["raw__encounter"]) == 1, errors
    message = errors["raw__encounter"][0]
    assert f"refusing to send credentials to {other.origin}" in message, message
    assert "_offset" not in message and "/fhir/" not in message  # the origin only, never the query
    assert other.exchanges == [] and not other.secrets  # nothing at all went to the other origin
    assert token in proxy.secrets
    snap = snapshot(warehouse)
    others = tuple(t for t in clean.rows if t != "Encounter")
    snap.assert_equals(clean, others)
    assert "Encounter" not in snap.watermarks and not snap.rows["Encounter"]


def test_a_trusted_origin_receives_credentials_and_is_recorded_as_the_origin(
    tmp_path: Path, proxy: FaultProxy, other: FaultProxy, token: str, log_journal: LogJournal, clean
) -> None:
    proxy.add(Mutate(_next_link_to(proxy.origin, other.origin)), ENCOUNTER, query=FIRST_PAGE)
    warehouse = tmp_path / "w.duckdb"
    fhir = source(proxy.base_url, auth_mode="bearer", token=token, trusted_origins=[other.origin])
    result = run_raw(fhir, warehouse, ("Encounter",))
    log_journal.add_text(event_text(result))
    assert result.success
    snapshot(warehouse).assert_equals(clean, ("Encounter",))
    assert other.secrets == {token} and other.seen(ENCOUNTER)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        origins = {r[0] for r in con.execute("SELECT DISTINCT origin FROM raw.encounter").fetchall()}
    # Page 1 came from the configured server, page 2 from the trusted one; no query values.
    assert any(o.startswith(f"{proxy.origin}/fhir/Encounter?") for o in origins), origins
    assert any(o.startswith(f"{other.origin}/fhir/Encounter?") for o in origins), origins
    assert all(re.search(r"=\d", o) is None for o in origins), origins


def test_bulk_status_url_on_another_origin_gets_no_credential(
    tmp_path: Path, proxy: FaultProxy, other: FaultProxy, token: str, log_journal: LogJournal
) -> None:
    def move_status(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, v.replace(proxy.origin, other.origin)) for k, v in headers]

    proxy.add(Rewrite(headers=move_status), KICK_OFF)
    result = run_raw(_bulk(proxy, tmp_path, auth_mode="bearer", token=token), tmp_path / "w.duckdb", QR_TYPE)
    log_journal.add_text(event_text(result))
    assert not result.success
    messages = step_errors(result)["raw__questionnaire_response"]
    assert len(messages) == 1 and f"refusing to send credentials to {other.origin}" in messages[0], messages
    assert other.exchanges == [] and len(proxy.seen(KICK_OFF)) == 1


@pytest.mark.parametrize("requires_token", [True, False], ids=["requiresAccessToken", "pre-signed"])
def test_bulk_files_on_another_origin(
    tmp_path: Path,
    proxy: FaultProxy,
    other: FaultProxy,
    token: str,
    log_journal: LogJournal,
    clean,
    requires_token: bool,
) -> None:
    def move_files(manifest: Any) -> Any:
        for item in manifest.get("output") or []:
            item["url"] = str(item["url"]).replace(proxy.origin, other.origin)
        manifest["requiresAccessToken"] = requires_token
        return manifest

    proxy.add(Mutate(move_files), STATUS, times=None)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(_bulk(proxy, tmp_path, auth_mode="bearer", token=token), warehouse, QR_TYPE)
    log_journal.add_text(event_text(result))
    assert not other.secrets  # never a credential to the file host
    if requires_token:
        # The manifest asks for the token on a host we do not trust: refused, not retried.
        assert not result.success
        messages = step_errors(result)["raw__questionnaire_response"]
        assert len(messages) == 1 and f"refusing to send credentials to {other.origin}" in messages[0]
        assert other.exchanges == []
        return
    # Pre-signed file URLs: fetched without credentials, landed, and their URL recorded as the origin.
    assert result.success
    assert other.seen(r"/bulk-files/") and all(e.method == "GET" for e in other.exchanges)
    snapshot(warehouse).assert_equals(clean, QR_TYPE)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        origins = con.execute("SELECT DISTINCT origin FROM raw.questionnaire_response").fetchall()
    assert origins and all(o[0].startswith(f"{other.origin}/fhir/bulk-files/") for o in origins), origins


# ---------------------------------------------------------------- 2. deeply nested resources


def test_a_300_level_nested_resource_is_rejected_and_the_rest_of_its_rest_page_lands(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    rule = proxy.add(Rewrite(body=_with_entry(_deep_response(300))), QR, query=page_query(2), times=None)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(source(proxy.base_url), warehouse, QR_TYPE)
    assert result.success and rule.fired >= 1
    snap = snapshot(warehouse)
    assert snap.rows["QuestionnaireResponse"] == clean.rows["QuestionnaireResponse"]
    assert "QuestionnaireResponse" in snap.watermarks
    deep = [r for r in _rejected(warehouse) if r[1] == DEEP_ID]
    assert len(deep) == 1, deep
    resource_type, _, reason, text, origin = deep[0]
    assert resource_type == "QuestionnaireResponse"
    assert "nested" in reason and "levels deep" in reason, reason
    assert text.count('"linkId"') == 301 and f'"id":"{DEEP_ID}"' in text
    assert origin.startswith(f"{proxy.origin}/fhir/QuestionnaireResponse?")


def test_a_300_level_nested_resource_in_a_bulk_file_is_rejected_as_received(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    deep = _deep_response(300)
    proxy.add(Rewrite(body=lambda body: deep + b"\n" + body), QR_FILE)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(_bulk(proxy, tmp_path), warehouse, QR_TYPE)
    assert result.success
    snap = snapshot(warehouse)
    assert snap.rows["QuestionnaireResponse"] == clean.rows["QuestionnaireResponse"]
    rows = [r for r in _rejected(warehouse) if r[1] == DEEP_ID]
    assert len(rows) == 1 and "levels deep" in rows[0][2]
    assert rows[0][3] == deep.decode()  # the line exactly as received


def test_a_300_level_nested_resource_in_a_folder_is_rejected_as_received(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    good = [
        orjson.dumps(
            {"resourceType": "Patient", "id": f"p{i}", "gender": "female", "birthDate": "1980-01-01"}
        )
        for i in range(3)
    ]
    deep = _deep_response(300)
    (folder / "QuestionnaireResponse.ndjson").write_bytes(deep + b"\n")
    (folder / "Patient.ndjson").write_bytes(b"\n".join(good) + b"\n")
    warehouse = tmp_path / "w.duckdb"
    fhir = source("http://127.0.0.1:9/unused", kind="folder", folder=str(folder))
    result = run_raw(fhir, warehouse, ("Patient", "QuestionnaireResponse"))
    assert result.success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.patient").fetchall()[0][0] == 3
    rows = _rejected(warehouse)
    assert [(r[0], r[1]) for r in rows] == [("QuestionnaireResponse", DEEP_ID)]
    assert "levels deep" in rows[0][2] and rows[0][3] == deep.decode()


# ---------------------------------------------------------------- 3. Bulk error and deleted files


def _error_and_deleted(proxy: FaultProxy, deleted_id: str) -> Callable[[Any], Any]:
    def add(manifest: Any) -> Any:
        base = f"{proxy.origin}/fhir/hostile-files"
        manifest["error"] = [{"type": "OperationOutcome", "url": f"{base}/errors.ndjson"}]
        manifest["deleted"] = [{"type": "Bundle", "url": f"{base}/deleted.ndjson"}]
        return manifest

    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "exception", "diagnostics": "QuestionnaireResponse/x failed"}
        ],
    }
    deleted = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"QuestionnaireResponse/{deleted_id}"}}],
    }
    proxy.add(
        Reply(200, body=orjson.dumps(outcome) + b"\n" + orjson.dumps(outcome) + b"\n"), r"/errors\.ndjson$"
    )
    proxy.add(Reply(200, body=orjson.dumps(deleted) + b"\n"), r"/deleted\.ndjson$", times=None)
    return add


def test_bulk_error_files_hold_the_watermark_and_deleted_entries_leave_the_current_versions(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    first = run_raw(_bulk(proxy, tmp_path), warehouse, QR_TYPE)
    assert first.success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        watermark = con.execute("SELECT watermark FROM raw.watermarks").fetchall()
        victim = con.execute("SELECT min(id) FROM raw.questionnaire_response").fetchall()[0][0]
    assert len(watermark) == 1
    # Downloads are removed once landed (no setting keeps them here).
    assert not list((tmp_path / "bulk").rglob("*.ndjson"))

    proxy.add(Mutate(_error_and_deleted(proxy, victim)), STATUS, times=None)
    second = run_raw(_bulk(proxy, tmp_path, keep_bulk_files=True), warehouse, QR_TYPE)
    assert second.success
    materialization = second.asset_materializations_for_node("raw__questionnaire_response")[0]
    assert materialization.metadata["bulk_errors"].value == 2
    assert materialization.metadata["bulk_deleted"].value == 1
    checks = second.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("export_complete", False)]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        # The export reported errors: the watermark did not move.
        assert con.execute("SELECT watermark FROM raw.watermarks").fetchall() == watermark
        findings = con.execute(
            "SELECT message FROM raw.findings WHERE error_type = 'bulk_export_error'"
        ).fetchall()
        assert len(findings) == 2 and all("QuestionnaireResponse/x failed" in f[0] for f in findings)
        tomb = con.execute(
            "SELECT version_id, deleted FROM raw.questionnaire_response WHERE id = ? AND deleted", [victim]
        ).fetchall()
        assert len(tomb) == 1 and tomb[0][0].startswith("deleted:")
        install_shared_macros(con)
        # every layer reads the newest version through the one shared macro
        current = {
            r[0]
            for r in con.execute("SELECT id FROM current_version('raw.questionnaire_response')").fetchall()
        }
        ids = {r[0] for r in con.execute("SELECT DISTINCT id FROM raw.questionnaire_response").fetchall()}
    assert current == ids - {victim}
    # keep_bulk_files: the downloads stay (this export's error and deleted files; it had no output).
    assert {p.name for p in (tmp_path / "bulk").rglob("*.ndjson")} >= {"errors-1.ndjson", "deleted-1.ndjson"}


# ---------------------------------------------------------------- 4. Bulk polling


def test_retry_after_zero_does_not_make_the_poll_faster_than_the_poll_interval(
    tmp_path: Path, proxy: FaultProxy, clean
) -> None:
    rule = proxy.add(Reply(202, {"Retry-After": "0", "X-Progress": "busy"}), STATUS, times=4)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(_bulk(proxy, tmp_path, bulk_poll_interval_s=0.5), warehouse, QR_TYPE)
    assert result.success and rule.fired == 4
    polls = [e.at for e in proxy.seen(STATUS) if e.method == "GET"]
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert len(gaps) >= 4 and min(gaps) >= 0.45, gaps
    snapshot(warehouse).assert_equals(clean, QR_TYPE)


# ---------------------------------------------------------------- 5. undecodable bytes


@pytest.mark.parametrize(
    ("bad", "expected"),
    [(b"fr-\xe9", "not valid UTF-8"), (b"fr-\\ud800", "surrogate")],
    ids=["latin-1-byte", "lone-surrogate"],
)
def test_an_undecodable_entry_is_rejected_with_orjsons_position_and_the_page_lands(
    tmp_path: Path, proxy: FaultProxy, clean, bad: bytes, expected: str
) -> None:
    victim: dict[str, str] = {}

    def corrupt(body: bytes) -> bytes:
        match = re.search(
            rb'"resource"\s*:\s*\{\s*"resourceType"\s*:\s*"QuestionnaireResponse"\s*,\s*"id"\s*:\s*"([^"]+)"',
            body,
        )
        assert match
        victim["id"] = match[1].decode()
        return body[: match.end()] + b',"language":"' + bad + b'"' + body[match.end() :]

    proxy.add(Rewrite(body=corrupt), QR, query=page_query(2), times=None)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(source(proxy.base_url), warehouse, QR_TYPE)
    assert result.success
    snap = snapshot(warehouse)
    lost = {r for r in clean.rows["QuestionnaireResponse"] if r[0] == victim["id"]}
    assert lost and snap.rows["QuestionnaireResponse"] == clean.rows["QuestionnaireResponse"] - lost
    assert "QuestionnaireResponse" in snap.watermarks
    rows = [r for r in _rejected(warehouse) if "undecodable" in r[2]]
    assert len(rows) == 1, _rejected(warehouse)
    reason, text = rows[0][2], rows[0][3]
    assert expected in reason and re.search(r"line \d+ column \d+", reason), reason
    assert victim["id"] in text


# ---------------------------------------------------------------- 6. server text echoing the token


def _echo(token: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "login",
                    "diagnostics": f"invalid header Authorization: Bearer {token}; token={token}",
                }
            ],
        }
    )


def test_an_error_body_that_echoes_the_token_is_masked_everywhere(
    tmp_path: Path, proxy: FaultProxy, token: str, log_journal: LogJournal
) -> None:
    proxy.add(Reply(401, body=_echo(token)), QR, query=page_query(2), times=None)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(source(proxy.base_url, auth_mode="bearer", token=token), warehouse, QR_TYPE)
    events = event_text(result)
    log_journal.add_text(events)
    assert not result.success
    messages = step_errors(result)["raw__questionnaire_response"]
    assert len(messages) == 1  # still unauthorised after re-authorising: fatal, not retried
    assert "HTTP 401" in messages[0] and "token=***" in messages[0], messages
    assert token not in events
    assert _files_containing(tmp_path, token) == []


def test_canonical_resolution_masks_the_detail_and_stops_at_an_outage(
    tmp_path: Path, proxy: FaultProxy, token: str, log_journal: LogJournal
) -> None:
    warehouse = tmp_path / "w.duckdb"
    canonicals = [f"http://example.org/Questionnaire/missing-{n}|1" for n in range(3)]
    with Warehouse(warehouse).connect() as con:
        for n, canonical in enumerate(canonicals):
            con.execute(
                """INSERT INTO raw.questionnaire_response VALUES (?, 'QuestionnaireResponse', ?, '1', true,
                   now(), 'h', ?::JSON, NULL, 'r', now(), false)""",
                [
                    SOURCE,
                    f"q{n}",
                    orjson.dumps(
                        {"resourceType": "QuestionnaireResponse", "questionnaire": canonical}
                    ).decode(),
                ],
            )
    spec = SourceSpec(name=SOURCE)
    validator = StructuralValidator()
    fast = RetryPolicy(max_attempts=3, base_delay=0.05, max_total_wait=1.0)

    # A 400 that echoes the token: this canonical is an error, its detail masked; the others go on.
    echo = proxy.add(Reply(400, body=_echo(token)), r"/fhir/Questionnaire$", times=1)
    client = FhirClient(proxy.base_url, auth=BearerAuth(token), retry=fast)
    with Warehouse(warehouse).connect() as con:
        outcome = resolve_referenced_questionnaires(con, spec, client, "run-1", validator)
        details = con.execute(
            "SELECT canonical, status, detail FROM raw.canonical_resolution WHERE run_id = 'run-1' ORDER BY 1"
        ).fetchall()
    assert echo.fired == 1 and outcome["errors"] == 1 and outcome["not_found"] == 2, outcome
    errored = [d for d in details if d[1] == "error"]
    assert len(errored) == 1 and "token=***" in errored[0][2] and token not in errored[0][2]

    # An outage: the first canonical spends the retry budget, the rest are not tried.
    proxy.clear()
    down = proxy.add(Reply(503), r"/fhir/Questionnaire$", times=None)
    with Warehouse(warehouse).connect() as con:
        outcome = resolve_referenced_questionnaires(con, spec, client, "run-2", validator)
        details = con.execute(
            "SELECT status, detail FROM raw.canonical_resolution WHERE run_id = 'run-2'"
        ).fetchall()
    assert outcome["errors"] == 3 and down.fired == fast.max_attempts  # one canonical's attempts only
    assert sum("not tried" in d[1] for d in details) == 2

    # A refused credential is fatal for the step: raised, not recorded per canonical.
    proxy.clear()
    proxy.add(Reply(403, body=_echo(token)), r"/fhir/Questionnaire$", times=None)
    with Warehouse(warehouse).connect() as con, pytest.raises(AuthError) as raised:
        resolve_referenced_questionnaires(con, spec, client, "run-3", validator)
    assert token not in str(raised.value) and "***" in str(raised.value)
    assert _files_containing(tmp_path, token) == []


# ---------------------------------------------------------------- 7. size and loop limits


def test_a_page_over_max_page_bytes_fails_once_without_retry(tmp_path: Path, proxy: FaultProxy) -> None:
    result = run_raw(source(proxy.base_url, max_page_bytes=4096), tmp_path / "w.duckdb", QR_TYPE)
    assert not result.success
    messages = step_errors(result)["raw__questionnaire_response"]
    assert len(messages) == 1 and "max_page_bytes=4096" in messages[0], messages
    # The first page, refused on its Content-Length, never retried (the small search probe passed).
    assert len(_pages(proxy)) == 1


def test_a_download_over_max_download_bytes_fails_once_without_retry(
    tmp_path: Path, proxy: FaultProxy
) -> None:
    result = run_raw(_bulk(proxy, tmp_path, max_download_bytes=2048), tmp_path / "w.duckdb", QR_TYPE)
    assert not result.success
    messages = step_errors(result)["raw__questionnaire_response"]
    assert len(messages) == 1 and "max_download_bytes=2048" in messages[0], messages
    assert not list((tmp_path / "bulk").rglob("*.part"))


def test_a_cursor_that_changes_but_serves_the_same_resources_stops_after_max_stale_pages(
    tmp_path: Path, proxy: FaultProxy
) -> None:
    counter = iter(range(1, 1000))

    def same_page_new_cursor(bundle: Any) -> Any:
        for link in bundle.get("link") or []:
            if link.get("relation") == "next":
                link["url"] = (
                    f"{proxy.base_url}/QuestionnaireResponse?_count=40&_offset=40&cursor={next(counter)}"
                )
        return bundle

    proxy.add(Mutate(same_page_new_cursor), QR, query=page_query(2), times=None)
    warehouse = tmp_path / "w.duckdb"
    result = run_raw(source(proxy.base_url, max_stale_pages=3), warehouse, QR_TYPE)
    assert not result.success
    messages = step_errors(result)["raw__questionnaire_response"]
    assert "3 consecutive pages" in messages[0] and "max_stale_pages=3" in messages[0], messages
    # Pages per attempt: 1, 2, then 2 again under a new cursor until 3 brought nothing new.
    attempts = len(messages)
    assert len(_pages(proxy)) == attempts * 5
    assert (
        "QuestionnaireResponse" not in snapshot(landing_file(warehouse, "QuestionnaireResponse")).watermarks
    )


# ---------------------------------------------------------------- done when: the hostile server


def test_hostile_server_end_to_end(
    tmp_path: Path,
    proxy: FaultProxy,
    other: FaultProxy,
    token: str,
    log_journal: LogJournal,
    clean,
) -> None:
    """Cross-origin next link and Bulk file URLs, a 300-level nested resource among valid ones, error
    bodies echoing the token: no credential to another origin, every valid resource landed, the
    nested one rejected with a reason, and the token in no file the run writes nor in any log."""
    # REST source: Encounter's next link leaves for another origin; a nested resource on a
    # QuestionnaireResponse page; a search OperationOutcome and a retried 503 echo the token.
    proxy.add(Mutate(_next_link_to(proxy.origin, other.origin)), ENCOUNTER, query=FIRST_PAGE)
    proxy.add(Rewrite(body=_with_entry(_deep_response(300))), QR, query=page_query(2), times=None)
    proxy.add(Reply(503, body=_echo(token)), r"/fhir/Patient$", times=2)

    def warn_with_echo(bundle: Any) -> Any:
        outcome = orjson.loads(_echo(token))
        outcome["issue"][0]["severity"] = "warning"
        bundle.setdefault("entry", []).append({"resource": outcome, "search": {"mode": "outcome"}})
        return bundle

    proxy.add(Mutate(warn_with_echo), r"/fhir/Practitioner$", times=None)
    home = tmp_path / "dagster_home"
    home.mkdir()
    warehouse = tmp_path / "w.duckdb"
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        rest = run_raw(source(proxy.base_url, auth_mode="bearer", token=token), warehouse, instance=instance)
        log_journal.add_text(event_text(rest))
        errors = step_errors(rest)
        assert set(errors) == {"raw__encounter"} and len(errors["raw__encounter"]) == 1, errors
        assert f"refusing to send credentials to {other.origin}" in errors["raw__encounter"][0]

        # Bulk source for QuestionnaireResponse: pre-signed files on another origin, a nested line.
        def files_elsewhere(manifest: Any) -> Any:
            for item in manifest.get("output") or []:
                item["url"] = str(item["url"]).replace(proxy.origin, other.origin)
            manifest["requiresAccessToken"] = False
            return manifest

        proxy.add(Mutate(files_elsewhere), STATUS, times=None)
        deep = _deep_response(300)
        other.add(Rewrite(body=lambda body: body + deep + b"\n"), QR_FILE)
        bulk_warehouse = tmp_path / "bulk.duckdb"
        bulk = run_raw(
            _bulk(proxy, tmp_path, auth_mode="bearer", token=token),
            bulk_warehouse,
            QR_TYPE,
            instance=instance,
        )
        log_journal.add_text(event_text(bulk))
        assert bulk.success

    # No credential reached the other origin, by any route.
    assert not other.secrets and token in proxy.secrets
    assert all(e.path.startswith("/fhir/bulk-files/") or "Encounter" not in e.path for e in other.exchanges)
    # Every valid resource landed; the nested ones were rejected with a reason.
    landed_types = tuple(t for t in clean.rows if t != "Encounter")
    for path, types in ((warehouse, landed_types), (bulk_warehouse, QR_TYPE)):
        snap = snapshot(path)
        snap.assert_sound()
        assert all(snap.rows[t] == clean.rows[t] for t in types)
        assert set(types) <= snap.watermarks
        new_rejects = {r for r in snap.rejected if r[0] in types} - clean.rejected
        assert {(r[0], r[1]) for r in new_rejects} == {("QuestionnaireResponse", DEEP_ID)}, new_rejects
        deep_rows = [r for r in _rejected(path) if r[1] == DEEP_ID]
        assert len(deep_rows) == 1 and "levels deep" in deep_rows[0][2], deep_rows
    # The token is in no file the runs wrote: warehouses, landing files, Bulk downloads, Dagster's
    # storage and logs (the instance folder); and in no log line (the log journal checks that).
    assert _files_containing(tmp_path, token) == []
    # The scan covers Dagster's storage: the run's own error text is found there.
    assert _files_containing(home, "refusing to send credentials"), sorted(home.rglob("*"))
    assert landing_file(warehouse, "Patient").exists()
