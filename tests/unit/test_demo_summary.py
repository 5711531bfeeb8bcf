"""`make demo`'s closing summary (demo/run_demo.py, queries in demo/sql/): rows per table, rejections,
the last pull's arithmetic and where every response went, on a small hand-built warehouse."""

from __future__ import annotations

from pathlib import Path

import duckdb

from demo.summary import summarize

WAREHOUSE_SQL = """
CREATE SCHEMA raw;
CREATE SCHEMA staging;
CREATE TABLE raw.rejected AS
    SELECT * FROM (VALUES ('Patient', 'invalid: no id'), ('Patient', 'invalid: bad date'),
                          (NULL, 'unparseable: truncated')) AS t(resource_type, reason);
CREATE TABLE raw.fetch_log AS
    SELECT * FROM (VALUES ('old', TIMESTAMPTZ '2026-01-01 00:00:00+00', 9, 9, 9, 0, 0),
                          ('new', TIMESTAMPTZ '2026-01-02 00:00:00+00', 7, 4, 1, 2, 1),
                          ('new', TIMESTAMPTZ '2026-01-02 00:00:01+00', 3, 3, 0, 0, 0))
    AS t(run_id, finished_at, fetched, landed, new_versions, rejected, duplicates);
CREATE TABLE staging.questionnaire_responses AS SELECT range AS id FROM range(4);
CREATE TABLE staging.measure_scores AS
    SELECT * FROM (VALUES ('s', 'r1', 'wai_sr', 'total', true), ('s', 'r1', 'wai_sr', 'bond', true),
                          ('s', 'r2', 'wai_sr', 'total', false))
    AS t(source, response_id, instrument, scale, is_valid);
CREATE TABLE staging.unmapped_responses AS SELECT 'unknown questionnaire' AS reason;
CREATE TABLE staging.excluded_responses AS SELECT 'entered-in-error' AS reason;
"""


def _warehouse(path: Path, sql: str) -> Path:
    con = duckdb.connect(str(path))
    try:
        con.execute(sql)
    finally:
        con.close()
    return path


def test_summary_counts_tables_rejections_the_last_pull_and_reconciles_responses(tmp_path: Path) -> None:
    text = summarize(_warehouse(tmp_path / "w.duckdb", WAREHOUSE_SQL))
    lines = text.splitlines()
    assert any(line.split() == ["raw.rejected", "3"] for line in lines)
    assert any(line.split() == ["staging.measure_scores", "3"] for line in lines)
    assert any(line.split() == ["Patient", "invalid", "2"] for line in lines)
    assert any(line.split() == ["(unparseable)", "unparseable", "1"] for line in lines)
    # the newest run only: 7 + 3 fetched, not the older run's 9
    assert "Last run: fetched 10 = landed 7 (new versions 1) + rejected 2 + duplicates 1" in text
    assert any(line.split() == ["wai_sr", "1", "1"] for line in lines)
    assert "staging.unmapped_responses:" in text and "staging.excluded_responses:" in text
    assert "Responses 4 = scored 2 + unmapped 1 + excluded 1" in text
    assert "DOES NOT RECONCILE" not in text


def test_summary_flags_responses_that_do_not_reconcile(tmp_path: Path) -> None:
    sql = WAREHOUSE_SQL.replace("range(4)", "range(5)")
    text = summarize(_warehouse(tmp_path / "w.duckdb", sql))
    assert "Responses 5 = scored 2 + unmapped 1 + excluded 1  << DOES NOT RECONCILE" in text
