"""quality.check_results / quality.quarantine: append-only writes, samples, the current quarantine
view the marts anti-join, and the summary printed at the end of `make demo`."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from quality_checks.params import QualitySettings
from quality_checks.runner import SAMPLE_SIZE, run_suite
from quality_checks.store import ensure_quality_schema
from quality_checks.suite import Suite, load_suites
from quality_checks.summary import summary_frame, summary_text

SUITE = """
suite: tiny
asset: staging/measure_scores
datasets:
  scores:
    requires: [staging.measure_scores]
    sql: SELECT source, response_id, score, note FROM staging.measure_scores ORDER BY response_id
checks:
  - id: tiny_score_in_range
    table: staging.measure_scores
    dataset: scores
    severity: ERROR
    quarantine: true
    description: score between 0 and 27
    key_columns: [response_id]
    expect: {type: expect_column_values_to_be_between, kwargs: {column: score, min_value: 0, max_value: 27}}
  - id: tiny_note_present
    table: staging.measure_scores
    dataset: scores
    severity: WARN
    description: note present
    key_columns: [response_id]
    expect: {type: expect_column_values_to_not_be_null, kwargs: {column: note}}
  - id: tiny_unique
    table: staging.measure_scores
    dataset: scores
    severity: ERROR
    description: one row per response
    key_columns: [response_id]
    expect: {type: expect_column_values_to_be_unique, kwargs: {column: response_id}}
"""


@pytest.fixture
def suite(tmp_path: Path) -> Suite:
    (tmp_path / "tiny.yaml").write_text(SUITE)
    (s,) = load_suites(tmp_path)
    return s


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("CREATE SCHEMA staging")
    # 100 responses; 30 out of range (above the 20-record sample), 5 without a note
    c.execute(
        """CREATE TABLE staging.measure_scores AS
           SELECT 'site' AS source, printf('qr-%03d', i) AS response_id,
                  CASE WHEN i < 30 THEN 40.0 ELSE 10.0 END AS score,
                  CASE WHEN i BETWEEN 50 AND 54 THEN NULL ELSE 'ok' END AS note
           FROM range(100) t(i)"""
    )
    return c


def _run(con: duckdb.DuckDBPyConnection, suite: Suite, run_id: str, limit: float = 50.0):
    return run_suite(
        con, suite, run_id=run_id, settings=QualitySettings(max_quarantine_percent=limit), registry={}
    )


def test_results_are_appended_with_counts_and_a_bounded_sample(con, suite):
    run = _run(con, suite, "run-1")
    by_id = run.by_id()
    assert by_id["tiny_score_in_range"].outcome == "contained"
    assert by_id["tiny_note_present"].outcome == "warning"
    assert by_id["tiny_unique"].outcome == "passed"
    rows = con.execute(
        """SELECT expectation_id, expectation, severity, success, element_count, unexpected_count,
                  unexpected_percent, sample_keys, outcome, quarantined, suite, table_name
           FROM quality.check_results WHERE run_id = 'run-1' ORDER BY expectation_id"""
    ).fetchall()
    got = {r[0]: r for r in rows}
    assert set(got) == {"tiny_score_in_range", "tiny_note_present", "tiny_unique"}
    r = got["tiny_score_in_range"]
    assert r[1:7] == ("expect_column_values_to_be_between", "ERROR", False, 100, 30, 30.0)
    samples = json.loads(r[7])
    assert len(samples) == SAMPLE_SIZE and samples[0] == "qr-000"
    assert r[8:] == ("contained", 30, "tiny", "staging.measure_scores")
    assert json.loads(got["tiny_note_present"][7]) == [f"qr-{i:03d}" for i in range(50, 55)]
    assert got["tiny_note_present"][9] == 0  # WARN never quarantines
    assert got["tiny_unique"][3] is True and json.loads(got["tiny_unique"][7]) == []


def test_quarantine_holds_every_offending_record_with_reason_and_row(con, suite):
    _run(con, suite, "run-1")
    rows = con.execute(
        """SELECT table_name, expectation_id, severity, source, record_key, reason, record
           FROM quality.quarantine ORDER BY record_key"""
    ).fetchall()
    assert len(rows) == 30  # all of them, not just the sample
    table, check, severity, source, key, reason, record = rows[0]
    assert (table, check, severity, source, key) == (
        "staging.measure_scores",
        "tiny_score_in_range",
        "ERROR",
        "site",
        "qr-000",
    )
    assert reason.startswith("tiny_score_in_range: score between 0 and 27")
    assert json.loads(record) == {"source": "site", "response_id": "qr-000", "score": 40.0, "note": "ok"}


def test_rerunning_a_run_does_not_duplicate_quarantine_and_results_stay_append_only(con, suite):
    _run(con, suite, "run-1")
    _run(con, suite, "run-1")  # a retried Dagster step: same run id
    assert con.execute("SELECT count(*) FROM quality.quarantine").fetchall()[0][0] == 30
    assert con.execute("SELECT count(*) FROM quality.check_results").fetchall()[0][0] == 6
    assert con.execute("SELECT count(*) FROM quality.current_quarantine").fetchall()[0][0] == 30


def test_current_quarantine_follows_the_newest_run_and_nothing_is_deleted(con, suite):
    _run(con, suite, "run-1")
    con.execute("UPDATE staging.measure_scores SET score = 10 WHERE response_id <> 'qr-099'")
    con.execute("UPDATE staging.measure_scores SET score = 99 WHERE response_id = 'qr-099'")
    _run(con, suite, "run-2")
    current = con.execute("SELECT run_id, record_key FROM quality.current_quarantine").fetchall()
    assert current == [("run-2", "qr-099")]
    assert con.execute("SELECT count(*) FROM quality.quarantine").fetchall()[0][0] == 31
    con.execute("UPDATE staging.measure_scores SET score = 1")
    _run(con, suite, "run-3")
    assert con.execute("SELECT count(*) FROM quality.current_quarantine").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM quality.quarantine").fetchall() == [(31,)]
    # the marts' ready-made key list
    con.execute("UPDATE staging.measure_scores SET score = 50 WHERE response_id = 'qr-007'")
    _run(con, suite, "run-5")
    assert con.execute("SELECT source, response_id FROM quality.quarantined_responses").fetchall() == [
        ("site", "qr-007")
    ]


def test_failure_share_above_the_limit_blocks(con, suite):
    run = _run(con, suite, "run-1", limit=10.0)
    o = run.by_id()["tiny_score_in_range"]
    assert o.outcome == "blocking" and o.blocks
    assert len(o.quarantine) == 30  # still written: blocking never loses the records
    assert run.blocking == [o]


def test_schema_creation_is_idempotent():
    c = duckdb.connect()
    ensure_quality_schema(c)
    ensure_quality_schema(c)
    names = {
        r[0]
        for r in c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'quality'"
        ).fetchall()
    }
    assert names == {"check_results", "quarantine", "current_quarantine", "quarantined_responses"}


def test_summary_frame_and_text_for_the_newest_run(con, suite):
    _run(con, suite, "run-old")
    con.execute("UPDATE staging.measure_scores SET score = 10 WHERE response_id <> 'qr-000'")
    _run(con, suite, "run-new")
    frame = summary_frame(con)
    assert set(frame["run_id"]) == {"run-new"}
    by_sev = {r.severity: r for r in frame.itertuples()}
    assert (by_sev["ERROR"].checks_run, by_sev["ERROR"].passed, by_sev["ERROR"].failed) == (2, 1, 1)
    assert by_sev["ERROR"].quarantined_rows == 1 and by_sev["ERROR"].pass_rate == 0.5
    assert (by_sev["WARN"].passed, by_sev["WARN"].failed, by_sev["WARN"].pass_rate) == (0, 1, 0.0)
    text = summary_text(con)
    assert "Data quality (run run-new)" in text
    assert "staging.measure_scores.tiny_score_in_range" in text and "qr-000" in text
    assert "contained" in text and "33.3%" in text


def test_summary_without_results():
    c = duckdb.connect()
    assert "no check results yet" in summary_text(c)
    assert summary_frame(c).empty


def test_shipped_datasets_never_select_names_birth_dates_or_free_text():
    """Offending values and sample keys land in quality.*: suites read ids, codes and numbers only."""
    forbidden = ("'name'", "birthdate", "telecom", "value_string", "coding_display", "'text'", "detail")
    for suite in load_suites():
        for ds in suite.datasets.values():
            if set(ds.identifiers) == {"mart"}:
                continue  # every row of a declared mart: marts carry pseudonyms only (their own rule)
            sql = ds.sql.lower()
            assert not [f for f in forbidden if f in sql], (suite.name, ds.name)
            assert "resource," not in sql.replace(" ", ""), (suite.name, ds.name)  # never the whole JSON
