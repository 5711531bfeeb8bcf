"""Every expectation of every suite: it passes on clean data and fails on deliberately bad data.

A small clean clinic (demo generator, mess off) is landed through the real raw landing (folder
source), flattened and scored with the real staging and scoring code into a DuckDB file. Each failing
case breaks the data in one way inside a transaction, evaluates only the check under test with Great
Expectations, asserts it fails and names the offending record, then rolls the damage back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from demo.generator import GeneratorConfig, generate
from demo.loader import write_ndjson
from fhir_mappings.flatten import build_questionnaire_answers
from fhir_mappings.questionnaires import build_questionnaire_tables
from fhir_mappings.registry import load_registry
from fhir_mappings.scoring import build_measure_scores
from pipelines.extract import SourceSpec, extract_resource_type
from pipelines.settings import RESOURCE_TYPES
from pipelines.warehouse import ensure_raw_schema
from quality_checks.params import QualitySettings
from quality_checks.runner import CheckOutcome, evaluate_suite
from quality_checks.structural import StructuralValidator
from quality_checks.suite import Suite, load_suites

SOURCE = "qc"


@dataclass
class Clean:
    con: duckdb.DuckDBPyConnection
    settings: QualitySettings
    suites: dict[str, Suite]
    ids: dict[str, str]
    registry: dict[str, Any]


def build_clean_warehouse(path: Path, patients: int = 3, seed: int = 11) -> duckdb.DuckDBPyConnection:
    """Generated clinic without mess -> real raw landing (folder source) -> staging -> scoring."""
    data = generate(GeneratorConfig(patients=patients, seed=seed, mess_rate=0.0))
    write_ndjson(path / "ndjson", data)
    con = duckdb.connect(str(path / "warehouse.duckdb"))
    ensure_raw_schema(con)
    spec = SourceSpec(name=SOURCE, kind="folder", folder=str(path / "ndjson"))
    for rtype in RESOURCE_TYPES:
        extract_resource_type(con, spec, None, rtype, "run-clean", StructuralValidator())
    build_questionnaire_answers(con)
    build_questionnaire_tables(con)
    build_measure_scores(con, load_registry(path / "no-site"))
    # Pulls "finish" an hour after the newest data, so freshness is judged on the data's own clock.
    con.execute(
        """UPDATE raw.fetch_log SET finished_at =
               (SELECT max(last_updated) FROM raw.questionnaire_response) + INTERVAL 1 HOUR"""
    )
    return con


def _bind(sql: str, ids: dict[str, str]) -> dict[str, str]:
    return {name: ids[name] for name in set(re.findall(r"\$([a-z_]+)", sql))}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clean]:
    path = tmp_path_factory.mktemp("quality_clean")
    con = build_clean_warehouse(path)
    newest = con.execute("SELECT max(finished_at) FROM raw.fetch_log").fetchall()[0][0]
    settings = QualitySettings(now=newest + timedelta(hours=1))

    def one(sql: str) -> str:
        rows = con.execute(sql).fetchall()
        assert rows, sql
        return str(rows[0][0])

    phq = one(
        """SELECT response_id FROM staging.measure_scores WHERE instrument = 'phq9' AND scale = 'total'
           AND reported_total IS NOT NULL ORDER BY response_id LIMIT 1"""
    )
    ids = {
        "phq": phq,
        "srs": one("SELECT min(response_id) FROM staging.measure_scores WHERE instrument = 'srs'"),
        "wai": one("SELECT min(response_id) FROM staging.measure_scores WHERE instrument = 'wai_sr'"),
        "patient": one(
            f"""SELECT split_part(patient_ref, '/', 2) FROM staging.measure_scores
                WHERE response_id = '{phq}'"""
        ),
        "encounter": one(
            f"""SELECT split_part(encounter_ref, '/', 2) FROM staging.measure_scores
                WHERE response_id = '{phq}'"""
        ),
        "phq_form": one(
            """SELECT min(questionnaire_id) FROM staging.response_forms
               WHERE instrument = 'phq9' AND questionnaire_id IN
                     (SELECT questionnaire_id FROM staging.questionnaire_answer_scores)"""
        ),
    }
    yield Clean(
        con=con,
        settings=settings,
        suites={s.name: s for s in load_suites()},
        ids=ids,
        registry=load_registry(path / "no-site"),
    )
    con.close()


@pytest.fixture(scope="module")
def clean_outcomes(clean: Clean) -> dict[str, CheckOutcome]:
    out: dict[str, CheckOutcome] = {}
    for suite in clean.suites.values():
        for o in evaluate_suite(clean.con, suite, settings=clean.settings, registry=clean.registry):
            out[o.check.id] = o
    return out


def _all_check_ids() -> list[str]:
    return [c.id for s in load_suites() for c in s.checks]


MART_IDS = {c.id for s in load_suites() if s.name.startswith("mart_") for c in s.checks}
NON_MART_IDS = [i for i in _all_check_ids() if i not in MART_IDS]


@pytest.mark.parametrize("check_id", NON_MART_IDS)
def test_check_passes_on_clean_data(clean_outcomes: dict[str, CheckOutcome], check_id: str) -> None:
    o = clean_outcomes[check_id]
    assert o.outcome == "passed", (o.summary(), o.details)
    assert o.success is True
    assert o.unexpected_count in (0, None)
    assert o.sample_keys == [] and o.quarantine == []


@pytest.mark.parametrize("check_id", sorted(MART_IDS))
def test_mart_checks_are_skipped_not_passed_when_the_mart_is_absent(
    clean_outcomes: dict[str, CheckOutcome], check_id: str
) -> None:
    o = clean_outcomes[check_id]
    assert o.outcome == "skipped"
    assert o.success is None
    assert "not present" in o.details["skipped"]


# (check id, statements that break the data, a fragment of the offending key, settings changes)
CASES: list[tuple[str, list[str], str, dict[str, Any]]] = [
    # raw_responses
    (
        "raw_qr_version_unique",
        ["INSERT INTO raw.questionnaire_response SELECT * FROM raw.questionnaire_response WHERE id = $phq"],
        "{phq}",
        {},
    ),
    (
        "raw_qr_status_present",
        [
            """UPDATE raw.questionnaire_response SET resource = json_merge_patch(resource, '{"status": null}')
               WHERE id = $phq"""
        ],
        "{phq}",
        {},
    ),
    (
        "raw_qr_status_allowed",
        [
            """UPDATE raw.questionnaire_response
               SET resource = json_merge_patch(resource, '{"status": "done"}') WHERE id = $phq"""
        ],
        "{phq}",
        {},
    ),
    (
        "raw_qr_references_present",
        [
            """UPDATE raw.questionnaire_response
               SET resource = json_merge_patch(resource, '{"encounter": null}') WHERE id = $phq"""
        ],
        "{phq}",
        {},
    ),
    # raw_intake
    (
        "raw_patient_version_unique",
        ["INSERT INTO raw.patient SELECT * FROM raw.patient WHERE id = $patient"],
        "{patient}",
        {},
    ),
    (
        "raw_encounter_version_unique",
        ["INSERT INTO raw.encounter SELECT * FROM raw.encounter WHERE id = $encounter"],
        "{encounter}",
        {},
    ),
    (
        "raw_pull_reconciles",
        ["UPDATE raw.fetch_log SET fetched = fetched + 1 WHERE resource_type = 'Patient'"],
        "qc/Patient",
        {},
    ),
    (
        "raw_rejected_resources",
        [
            """INSERT INTO raw.rejected VALUES ('qc', 'Patient', 'pat-bad', '1',
               'invalid birthDate: not a date', '[]', '{}', 'file:1', 'run-x', now())"""
        ],
        "Patient/pat-bad",
        {},
    ),
    (
        "raw_findings_on_unused_elements",
        [
            """INSERT INTO raw.findings VALUES ('qc', 'Appointment', 'appt-x', '1', 'minutesDuration',
               'not a positiveInt', 'int_parsing', false, 'run-x', now())"""
        ],
        "Appointment/appt-x",
        {},
    ),
    (
        "raw_freshness",
        [
            "UPDATE raw.questionnaire_response SET last_updated = last_updated - INTERVAL 40 DAY",
            "UPDATE raw.encounter SET last_updated = last_updated - INTERVAL 40 DAY",
            "UPDATE raw.fetch_log SET finished_at = finished_at - INTERVAL 40 DAY",
        ],
        "qc",
        {},
    ),
    # staging_answers
    (
        "stg_responses_unique",
        [
            """INSERT INTO staging.questionnaire_responses
               SELECT * FROM staging.questionnaire_responses WHERE response_id = $phq"""
        ],
        "{phq}",
        {},
    ),
    (
        "stg_responses_required",
        ["UPDATE staging.questionnaire_responses SET status = NULL WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "stg_responses_status_allowed",
        ["UPDATE staging.questionnaire_responses SET status = 'done' WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "stg_responses_reconcile_raw",
        ["DELETE FROM staging.questionnaire_responses WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "stg_answers_belong_to_response",
        ["UPDATE staging.questionnaire_answers SET version_id = 'v-gone' WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "stg_answers_unique",
        [
            """INSERT INTO staging.questionnaire_answers
               SELECT * FROM staging.questionnaire_answers WHERE response_id = $phq LIMIT 1"""
        ],
        "{phq}",
        {},
    ),
    (
        "stg_answers_link_id_present",
        ["UPDATE staging.questionnaire_answers SET link_id = NULL WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    # measure_scores: structure
    (
        "ms_unique_response_scale",
        ["INSERT INTO staging.measure_scores SELECT * FROM staging.measure_scores WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_bounds_from_registry",
        ["UPDATE staging.measure_scores SET scale_max = 99 WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_items_expected_from_registry",
        ["UPDATE staging.measure_scores SET items_expected = 3 WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_domain_and_rater",
        ["UPDATE staging.measure_scores SET rater = 'robot' WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    # measure_scores: row-level, quarantined
    (
        "ms_scale_in_registry",
        ["UPDATE staging.measure_scores SET scale = 'extra' WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_score_in_range",
        ["UPDATE staging.measure_scores SET score = 28 WHERE response_id = $phq AND scale = 'total'"],
        "{phq}",
        {},
    ),
    (
        "ms_items_answered_within_expected",
        ["UPDATE staging.measure_scores SET items_answered = items_expected + 1 WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_answer_scores_in_item_range",
        [
            """UPDATE staging.questionnaire_answers SET value_integer = 11
               WHERE response_id = $srs AND answer_type = 'integer'"""
        ],
        "{srs}",
        {},
    ),
    (
        "ms_required_fields",
        ["UPDATE staging.measure_scores SET patient_ref = NULL WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_status_scored",
        ["UPDATE staging.measure_scores SET status = 'stopped' WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_authored_plausible",
        [
            """UPDATE staging.measure_scores SET authored_at = TIMESTAMPTZ '1990-01-01 10:00:00+00'
               WHERE response_id = $phq"""
        ],
        "{phq}",
        {},
    ),
    (
        # one patient of three: a third of the responses, so allow more than the default 20 %
        "ms_subject_exists",
        ["DELETE FROM raw.patient WHERE id = $patient"],
        "{phq}",
        {"max_quarantine_percent": 60.0},
    ),
    (
        "ms_encounter_exists",
        ["DELETE FROM raw.encounter WHERE id = $encounter"],
        "{phq}",
        {},
    ),
    (
        "ms_no_duplicate_submission",
        [
            """INSERT INTO staging.measure_scores
               SELECT * REPLACE (response_id || '-dup' AS response_id,
                                 authored_at + INTERVAL 1 MINUTE AS authored_at)
               FROM staging.measure_scores WHERE response_id = $phq"""
        ],
        "{phq}-dup",
        {},
    ),
    (
        "ms_scored_current_version",
        ["UPDATE staging.questionnaire_responses SET version_id = 'v-newer' WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    # measure_scores: annotations
    (
        "ms_encounter_present",
        ["UPDATE staging.measure_scores SET encounter_ref = NULL WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_session_date_tolerance",
        [
            """UPDATE staging.measure_scores SET authored_at = authored_at + INTERVAL 30 DAY
               WHERE response_id = $phq"""
        ],
        "{phq}",
        {},
    ),
    (
        "ms_amended_responses",
        ["UPDATE staging.measure_scores SET status = 'amended' WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_valid_scores",
        ["UPDATE staging.measure_scores SET is_valid = false, score = NULL WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_complete_responses",
        ["UPDATE staging.measure_scores SET items_answered = items_expected - 1 WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    (
        "ms_reported_total_matches",
        [
            """UPDATE staging.measure_scores SET reported_total_mismatch = true
               WHERE response_id = $phq AND scale = 'total'"""
        ],
        "{phq}",
        {},
    ),
    (
        "ms_form_scores_match_registry",
        [
            """UPDATE staging.measure_scores SET form_score_mismatch = true
               WHERE response_id = $phq AND scale = 'total'"""
        ],
        "{phq}",
        {},
    ),
    (
        "ms_reported_total_in_range",
        [
            """UPDATE staging.measure_scores SET reported_total = 99
               WHERE response_id = $phq AND scale = 'total'"""
        ],
        "{phq}",
        {},
    ),
    (
        "ms_form_option_scores_in_item_range",
        ["UPDATE staging.questionnaire_answer_scores SET score = 9 WHERE questionnaire_id = $phq_form"],
        "{phq_form}#",
        {},
    ),
    (
        "ms_unmapped_responses",
        [
            """INSERT INTO staging.unmapped_responses (source, response_id, version_id, status, reason)
               VALUES ('qc', 'qr-unknown-form', '1', 'completed', 'unknown questionnaire')"""
        ],
        "qr-unknown-form",
        {},
    ),
    (
        "ms_withdrawn_responses",
        [
            """INSERT INTO staging.excluded_responses (source, response_id, version_id, status, reason)
               VALUES ('qc', 'qr-withdrawn', '2', 'entered-in-error', 'withdrawn: entered-in-error')"""
        ],
        "qr-withdrawn",
        {},
    ),
    (
        "ms_unfinished_responses",
        [
            """INSERT INTO staging.excluded_responses (source, response_id, version_id, status, reason)
               VALUES ('qc', 'qr-stopped', '1', 'stopped', 'not finished: stopped')"""
        ],
        "qr-stopped",
        {},
    ),
    (
        "ms_unmapped_reason_allowed",
        [
            """INSERT INTO staging.unmapped_responses (source, response_id, version_id, status, reason)
               VALUES ('qc', 'qr-odd', '1', 'completed', 'no idea')"""
        ],
        "qr-odd",
        {},
    ),
    (
        "ms_excluded_status_allowed",
        [
            """INSERT INTO staging.excluded_responses (source, response_id, version_id, status, reason)
               VALUES ('qc', 'qr-odd', '1', 'completed', 'odd')"""
        ],
        "qr-odd",
        {},
    ),
    (
        "ms_responses_reconcile",
        ["DELETE FROM staging.measure_scores WHERE response_id = $phq"],
        "{phq}",
        {},
    ),
    # marts (a published aggregate built by the marts layer)
    (
        "qi_monthly_unique_key",
        [
            "CREATE SCHEMA IF NOT EXISTS marts",
            """CREATE TABLE marts.qi_monthly AS SELECT * FROM (VALUES
               ('clinic', 'c1', DATE '2026-01-01', 12), ('clinic', 'c1', DATE '2026-01-01', 15),
               ('practice', NULL, DATE '2026-01-01', 27)) t(level, clinic_key, month, patients_seen)""",
        ],
        "clinic|c1|2026-01-01",
        {},
    ),
    (
        "qi_monthly_key_present",
        [
            "CREATE SCHEMA IF NOT EXISTS marts",
            """CREATE TABLE marts.qi_monthly AS SELECT * FROM (VALUES
               ('clinic', 'c1', DATE '2026-01-01', 12), (NULL, 'c1', DATE '2026-02-01', 15))
               t(level, clinic_key, month, patients_seen)""",
        ],
        "|c1|2026-02-01",
        {},
    ),
    (
        "qi_monthly_small_cells_suppressed",
        [
            "CREATE SCHEMA IF NOT EXISTS marts",
            """CREATE TABLE marts.qi_monthly AS SELECT * FROM (VALUES
               ('clinic', 'c1', DATE '2026-01-01', 12, 40), ('clinic', 'c1', DATE '2026-02-01', 5, 40))
               t(level, clinic_key, month, patients_seen, sessions_attended)""",
        ],
        "clinic|c1|2026-02-01",
        {},
    ),
]


def test_every_check_has_a_failing_case() -> None:
    covered = {c[0] for c in CASES}
    missing = [
        i
        for i in _all_check_ids()
        if i not in covered and not (i in MART_IDS and not i.startswith("qi_monthly"))
    ]
    assert missing == []


def _break_and_evaluate(clean: Clean, check_id: str, statements: list[str], **changes: Any) -> CheckOutcome:
    suite = next(s for s in clean.suites.values() if check_id in {c.id for c in s.checks})
    settings = clean.settings.model_copy(update=changes) if changes else clean.settings
    clean.con.execute("BEGIN TRANSACTION")
    try:
        for sql in statements:
            clean.con.execute(sql, _bind(sql, clean.ids))
        (outcome,) = evaluate_suite(
            clean.con, suite, settings=settings, registry=clean.registry, only={check_id}
        )
    finally:
        clean.con.execute("ROLLBACK")
    return outcome


@pytest.mark.parametrize(("check_id", "statements", "key", "changes"), CASES, ids=[c[0] for c in CASES])
def test_check_fails_on_bad_data_and_names_the_offending_record(
    clean: Clean, check_id: str, statements: list[str], key: str, changes: dict[str, Any]
) -> None:
    o = _break_and_evaluate(clean, check_id, statements, **changes)
    assert o.success is False, o.summary()
    assert "error" not in o.details, o.details
    expected = key.format(**clean.ids)
    assert o.unexpected_count and o.unexpected_count >= 1
    assert any(expected in k for k in o.sample_keys), (expected, o.sample_keys)
    if o.check.severity == "WARN":
        assert o.outcome == "warning" and not o.quarantine
    elif o.check.quarantine:
        assert o.outcome == "contained"
        assert any(expected in r.record_key for r in o.quarantine)
        assert all(r.reason.startswith(check_id) for r in o.quarantine)
    else:
        assert o.outcome == "blocking" and o.blocks and not o.quarantine


def test_duplicate_submission_quarantines_the_later_response_only(clean: Clean) -> None:
    case = next(c for c in CASES if c[0] == "ms_no_duplicate_submission")
    o = _break_and_evaluate(clean, case[0], case[1])
    assert [r.record_key for r in o.quarantine] == [clean.ids["phq"] + "-dup"]
    assert o.quarantine[0].record["submission_rank"] == 2


def test_row_level_error_above_the_quarantine_limit_blocks_and_still_quarantines(clean: Clean) -> None:
    o = _break_and_evaluate(clean, "ms_subject_exists", ["DELETE FROM raw.patient WHERE id = $patient"])
    assert o.unexpected_percent is not None and o.unexpected_percent > 20.0
    assert o.outcome == "blocking" and "limit" in o.details["blocked_because"]
    assert clean.ids["phq"] in {r.record_key for r in o.quarantine}  # nothing is dropped


def test_authored_in_the_future_is_caught(clean: Clean) -> None:
    o = _break_and_evaluate(
        clean,
        "ms_authored_plausible",
        [
            """UPDATE staging.measure_scores
               SET authored_at = (SELECT max(finished_at) FROM raw.fetch_log) + INTERVAL 3 DAY
               WHERE response_id = $phq"""
        ],
    )
    assert o.success is False and clean.ids["phq"] in o.sample_keys


def test_small_cells_pass_when_suppressed_zero_or_large_and_thresholds_are_not_counts(clean: Clean) -> None:
    o = _break_and_evaluate(
        clean,
        "qi_monthly_small_cells_suppressed",
        [
            "CREATE SCHEMA IF NOT EXISTS marts",
            """CREATE TABLE marts.qi_monthly AS SELECT * FROM (VALUES
               ('clinic', 'c1', DATE '2026-01-01', NULL::INTEGER, 0, 11, 6, 11),
               ('practice', NULL, DATE '2026-01-01', 25, 0, 400, 6, 11))
               t(level, clinic_key, month, patients_seen, sessions_measured, sessions_attended,
                 reliable_change_threshold, min_cell)""",
        ],
    )
    assert o.outcome == "passed", o.details
    assert o.details["expectations_run"] == 3  # patients_seen, sessions_measured, sessions_attended


def test_mart_key_checks_pass_on_a_well_formed_mart(clean: Clean) -> None:
    for check_id in ("alliance_sessions_unique_key", "alliance_sessions_key_present"):
        o = _break_and_evaluate(
            clean,
            check_id,
            [
                "CREATE SCHEMA IF NOT EXISTS marts",
                """CREATE TABLE marts.alliance_sessions AS SELECT * FROM (VALUES
                   ('s1', 3), ('s2', 1)) t(session_key, session_number)""",
            ],
        )
        assert o.outcome == "passed", o.details


def test_score_ranges_come_from_the_registry(clean: Clean) -> None:
    """Narrow PHQ-9's total range in the registry: the same stored scores now fail, no suite edits."""
    phq_total = clean.con.execute(
        "SELECT score FROM staging.measure_scores WHERE response_id = ? AND scale = 'total'",
        [clean.ids["phq"]],
    ).fetchall()[0][0]
    registry = dict(clean.registry)
    phq9 = registry["phq9"]
    narrow = phq9.scales["total"].model_copy(update={"range": (phq_total + 1, 27.0)})
    registry["phq9"] = phq9.model_copy(update={"scales": {**phq9.scales, "total": narrow}})
    suite = clean.suites["measure_scores"]
    (o,) = evaluate_suite(
        clean.con, suite, settings=clean.settings, registry=registry, only={"ms_score_in_range"}
    )
    assert o.success is False and clean.ids["phq"] in o.sample_keys


def test_a_check_that_cannot_run_fails_with_the_reason(tmp_path: Path) -> None:
    """A missing column, a broken query or a missing table: ERROR checks block, WARN checks warn."""
    (tmp_path / "s.yaml").write_text(
        """
suite: broken
asset: staging/things
datasets:
  things: {requires: [staging.things], sql: "SELECT id, n FROM staging.things"}
  broken: {requires: [staging.things], sql: "SELECT id, no_such_column FROM staging.things"}
  absent: {requires: [staging.absent], sql: "SELECT * FROM staging.absent"}
checks:
  - {id: missing_column, table: staging.things, dataset: things, severity: WARN, description: d,
     key_columns: [id], expect: {type: expect_column_values_to_not_be_null, kwargs: {column: nope}}}
  - {id: broken_query, table: staging.things, dataset: broken, severity: ERROR, description: d,
     key_columns: [id], expect: {type: expect_column_values_to_not_be_null, kwargs: {column: id}}}
  - {id: absent_table, table: staging.absent, dataset: absent, severity: ERROR, description: d,
     key_columns: [id], expect: {type: expect_column_values_to_not_be_null, kwargs: {column: id}}}
"""
    )
    (suite,) = load_suites(tmp_path)
    con = duckdb.connect()
    con.execute("CREATE SCHEMA staging; CREATE TABLE staging.things AS SELECT 'a' AS id, 1 AS n")
    out = {o.check.id: o for o in evaluate_suite(con, suite, settings=QualitySettings(), registry={})}
    assert out["missing_column"].outcome == "warning" and "nope" in out["missing_column"].details["error"]
    assert (
        out["broken_query"].outcome == "blocking" and "no_such_column" in out["broken_query"].details["error"]
    )
    assert out["absent_table"].outcome == "blocking" and "not present" in out["absent_table"].details["error"]
    assert all(o.success is False for o in out.values())
