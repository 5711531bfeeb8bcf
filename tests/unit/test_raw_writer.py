"""Raw landing: every received resource is accounted for exactly once, and re-runs change nothing."""

from __future__ import annotations

import duckdb
import pytest

from pipelines.raw_writer import RawLander, content_hash, version_key
from pipelines.warehouse import RAW_TABLES, ensure_raw_schema, table_for
from quality_checks.structural import StructuralValidator


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(c)
    yield c
    c.close()


def _qr(i: int, version: str | None = "1", status: str = "completed") -> dict:
    r = {
        "resourceType": "QuestionnaireResponse",
        "id": f"qr-{i}",
        "status": status,
        "questionnaire": "http://x/Questionnaire/phq-9|1.0",
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-03-01T10:00:00+00:00",
    }
    if version:
        r["meta"] = {"versionId": version, "lastUpdated": f"2026-03-0{1 + i % 9}T10:00:00Z"}
    return r


def _land(con, items, run_id="run-1", batch_size=3):
    lander = RawLander(
        con, "site", "QuestionnaireResponse", run_id, StructuralValidator(), batch_size=batch_size
    )
    for it in items:
        if isinstance(it, tuple):
            lander.add(None, origin="f.ndjson:7", parse_error=it[0], text=it[1])
        else:
            lander.add(it, origin="test")
    return lander, lander.close()


def test_table_names_are_snake_case():
    assert table_for("QuestionnaireResponse") == "questionnaire_response"
    assert RAW_TABLES["MedicationDispense"] == "medication_dispense"
    assert len(RAW_TABLES) == 10


def test_every_resource_lands_once_and_counts_reconcile(con):
    items = [_qr(1), _qr(2), _qr(2), _qr(3, status="done"), ("Expecting value", "{not json"), _qr(4, "2")]
    lander, counts = _land(con, items)
    assert counts.fetched == 6
    assert counts.new_versions == 3
    assert counts.duplicates == 1
    assert counts.rejected == 2
    assert counts.reconciles()
    assert con.execute("SELECT count(*) FROM raw.questionnaire_response").fetchall()[0][0] == 3
    rejected = con.execute(
        "SELECT id, reason, resource_text FROM raw.rejected ORDER BY id NULLS LAST"
    ).fetchall()
    assert rejected[0][0] == "qr-3" and "status" in rejected[0][1]
    assert (
        rejected[1][0] is None and rejected[1][1].startswith("unparseable") and rejected[1][2] == "{not json"
    )
    assert lander.max_last_updated == "2026-03-05T10:00:00Z"


def test_rerun_of_the_same_pull_changes_nothing(con):
    items = [_qr(1), _qr(2), _qr(3, status="done"), ("bad", "{x")]
    _land(con, items, "run-1")
    before = con.execute("SELECT * FROM raw.questionnaire_response ORDER BY id").fetchall()
    rej_before = con.execute("SELECT count(*) FROM raw.rejected").fetchall()
    find_before = con.execute("SELECT count(*) FROM raw.findings").fetchall()
    _, counts = _land(con, items, "run-2")
    assert counts.new_versions == 0 and counts.unchanged == 2 and counts.rejected == 2
    assert counts.reconciles()
    assert con.execute("SELECT * FROM raw.questionnaire_response ORDER BY id").fetchall() == before
    assert con.execute("SELECT count(*) FROM raw.rejected").fetchall() == rej_before
    assert con.execute("SELECT count(*) FROM raw.findings").fetchall() == find_before


def test_new_version_of_same_id_is_kept_beside_the_old(con):
    _land(con, [_qr(1, "1")])
    amended = _qr(1, "2", status="amended")
    _, counts = _land(con, [amended], "run-2")
    assert counts.new_versions == 1
    rows = con.execute(
        "SELECT version_id, resource->>'status' FROM raw.questionnaire_response ORDER BY 1"
    ).fetchall()
    assert rows == [("1", "completed"), ("2", "amended")]


def test_servers_without_version_id_get_a_content_hash_version(con):
    a = _qr(1, version=None)
    b = dict(a, status="amended")
    assert version_key(a, content_hash(a))[0].startswith("sha:")
    assert content_hash(a) == content_hash(dict(a, meta={"lastUpdated": "2030-01-01T00:00:00Z"}))
    _, c1 = _land(con, [a, b])
    _, c2 = _land(con, [a, b], "run-2")
    assert (c1.new_versions, c2.new_versions, c2.unchanged) == (2, 0, 2)


def test_non_blocking_findings_are_recorded_for_kept_resources(con):
    lander = RawLander(con, "site", "Patient", "r", StructuralValidator())
    lander.add({"resourceType": "Patient", "id": "p1", "telecom": [{"rank": "first"}]})
    counts = lander.close()
    assert counts.new_versions == 1 and counts.rejected == 0 and counts.findings == 1
    rows = con.execute("SELECT id, path, blocking FROM raw.findings").fetchall()
    assert rows == [("p1", "telecom[0].rank", False)]


def _deep(levels: int) -> dict:
    item: dict = {"linkId": "leaf"}
    for n in range(levels):
        item = {"linkId": f"l{n}", "item": [item]}
    return {**_qr(99), "item": [item]}


def test_a_resource_too_deep_to_store_is_rejected_and_its_batch_lands(con):
    _, counts = _land(con, [_qr(1), _deep(200), _qr(2)], batch_size=10)
    assert counts.reconciles() and counts.new_versions == 2 and counts.rejected == 1
    ((resource_type, rid, reason, text),) = con.execute(
        "SELECT resource_type, id, reason, resource_text FROM raw.rejected"
    ).fetchall()
    assert (resource_type, rid) == ("QuestionnaireResponse", "qr-99")
    assert "nested 403 levels deep" in reason and text.count('"linkId"') == 201
    # Landing the same again changes nothing (idempotent for the rejected one too).
    _, again = _land(con, [_qr(1), _deep(200), _qr(2)], run_id="run-2", batch_size=10)
    assert (again.unchanged, again.rejected, again.new_versions) == (2, 1, 0)


def test_a_tombstone_hides_the_resource_from_every_current_version_query(con):
    from fhir_mappings.questionnaires import build_questionnaire_tables
    from pipelines.sqlfiles import install_shared_macros

    install_shared_macros(con)
    current = "SELECT id FROM current_version('raw.questionnaire_response')"

    _land(con, [_qr(1), _qr(2)])
    lander = RawLander(con, "site", "QuestionnaireResponse", "run-2", StructuralValidator())
    lander.add_deleted("qr-1", "2026-04-01T00:00:00.000Z", origin="bulk-deleted:deleted-1.ndjson")
    lander.add_deleted("qr-1", "2026-04-01T00:00:00.000Z")  # reported twice: one tombstone
    counts = lander.close()
    assert counts.reconciles() and counts.new_versions == 1 and counts.duplicates == 1
    rows = con.execute(
        "SELECT version_id, deleted FROM raw.questionnaire_response WHERE id = 'qr-1' ORDER BY version_id"
    ).fetchall()
    assert rows == [("1", False), ("deleted:2026-04-01T00:00:00.000Z", True)]
    # every layer reads the newest version through the one shared macro
    assert {r[0] for r in con.execute(current).fetchall()} == {"qr-2"}
    # A version newer than the tombstone (the resource was recreated) is current again.
    _land(
        con,
        [{**_qr(1, version="3"), "meta": {"versionId": "3", "lastUpdated": "2026-05-01T00:00:00Z"}}],
        "run-3",
    )
    assert {r[0] for r in con.execute(current).fetchall()} == {"qr-1", "qr-2"}

    # Questionnaires: the staging build skips a deleted form.
    q = RawLander(con, "site", "Questionnaire", "run-4", StructuralValidator())
    for qid in ("keep", "gone"):
        q.add(
            {
                "resourceType": "Questionnaire",
                "id": qid,
                "status": "active",
                "url": f"http://x/Questionnaire/{qid}",
                "meta": {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z"},
            }
        )
    q.add_deleted("gone", "2026-04-01T00:00:00.000Z")
    q.close()
    build_questionnaire_tables(con)
    assert {r[0] for r in con.execute("SELECT questionnaire_id FROM staging.questionnaires").fetchall()} == {
        "keep"
    }
