"""The staging and scoring steps as declared in fhir_mappings/tables.py: names, tables, SQL files,
inputs read by the SQL, what a build returns, and the version order scoring relies on."""

from __future__ import annotations

import re

import pytest

from fhir_mappings import tables
from fhir_mappings.flatten import answers_view_fingerprint
from fhir_mappings.registry import load_registry, registry_fingerprint
from pipelines.catalog import StepSpec
from tests.support.scoring_kit import ScoringDB, qr

# Step names are recorded in ops.build_state of existing warehouses: renaming one forces a rebuild.
EXPECTED_STEPS = {
    "staging.questionnaire_answers": (
        {"staging.questionnaire_responses", "staging.questionnaire_answers"},
        {"raw.questionnaire_response"},
    ),
    "staging.questionnaire_items": (
        {"staging.questionnaires", "staging.questionnaire_items", "staging.questionnaire_answer_scores"},
        {"raw.questionnaire"},
    ),
    "staging.measure_scores": (
        {
            "staging.measure_scores",
            "staging.unmapped_responses",
            "staging.excluded_responses",
            "staging.response_forms",
            "staging.form_item_map",
            "staging.instrument_scales",
        },
        {
            "raw.questionnaire_response",
            "staging.questionnaire_responses",
            "staging.questionnaire_answers",
            "staging.questionnaires",
            "staging.questionnaire_items",
            "staging.questionnaire_answer_scores",
        },
    ),
}
_TABLE_REFERENCE = re.compile(r"\b((?:raw|staging|quality|marts)\.[a-z_][a-z0-9_]*)\b")


def _step(name: str) -> StepSpec:
    return next(s for s in tables.STEPS if s.name == name)


def test_three_steps_named_after_their_first_table_write_the_declared_tables():
    assert [s.name for s in tables.STEPS] == list(EXPECTED_STEPS)
    for step in tables.STEPS:
        written, read = EXPECTED_STEPS[step.name]
        assert step.layer == "staging"
        assert step.tables[0].name == step.name
        assert set(step.table_names) == written
        assert set(step.inputs) == read
        assert step.description
        for table in step.tables:
            assert table.grain.startswith("One row per") and table.key and table.description
            assert table.sql is not None and table.sql in step.files


@pytest.mark.parametrize("name", list(EXPECTED_STEPS))
def test_every_table_a_steps_sql_reads_is_an_input_or_its_own_output(name):
    step = _step(name)
    referenced: set[str] = set()
    for path in step.files:
        assert path.is_file(), path
        sql = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        referenced |= set(_TABLE_REFERENCE.findall(sql))
    assert referenced - set(step.table_names) == set(step.inputs)


@pytest.fixture
def db(tmp_path) -> ScoringDB:
    d = ScoringDB(registry=load_registry(tmp_path))  # empty site folder: the shipped registry only
    d.forms("phq-9", "gad-7-vendor")
    return d


def test_steps_build_every_declared_table_and_report_its_rows(db, tmp_path):
    db.response(qr("a", "phq-9", [1] * 9))
    db.response(qr("b", "phq-9", [1] * 9, status="in-progress"))
    db.response(qr("c", "phq-9", [1] * 9, questionnaire="http://nowhere.example/Questionnaire/x"))
    registry = load_registry(tmp_path)
    for step in tables.STEPS:
        ctx = registry if step.name == "staging.measure_scores" else step.context()
        counts = step.build(db.con, ctx)
        for table in step.tables:
            assert counts[f"rows.{table.name}"] == len(db.con.table(table.name).fetchall())
    assert counts["unaccounted"] == 0
    assert (counts["scored_responses"], counts["unmapped_responses"], counts["excluded_responses"]) == (
        1,
        1,
        1,
    )
    assert counts["rows.staging.measure_scores"] == 1  # PHQ-9 has one scale
    # Work tables, registered rows and views are gone: the connection is left as it was found.
    assert db.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall() == []
    leftover_views = "SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal"
    assert db.con.execute(leftover_views).fetchall() == []


def test_scores_step_context_and_fingerprint_are_the_registry():
    step = _step("staging.measure_scores")
    registry = step.context()
    assert set(registry) == set(load_registry())
    assert step.fingerprint_text(registry) == registry_fingerprint(registry)
    # the answers step has no context: its fingerprint is the ViewDefinition it compiles
    assert _step("staging.questionnaire_answers").fingerprint_text(None) == answers_view_fingerprint()


def test_scores_step_fails_when_a_response_is_unaccounted_for(db, monkeypatch):
    def losing_build(con, registry):
        return {
            "responses": 2,
            "scored_responses": 1,
            "unmapped_responses": 0,
            "excluded_responses": 0,
            "unaccounted": 1,
        }

    monkeypatch.setattr(tables.scoring, "build_measure_scores", losing_build)
    with pytest.raises(tables.ScoringLostResponses, match="lost 1 responses"):
        _step("staging.measure_scores").build(db.con, {})


def test_without_last_updated_version_10_is_current_and_withdrawn_by_11(db):
    # Folder drops often carry no meta.lastUpdated: versionId decides, as a number. Version 10 (the
    # amendment) is the newest scoreable version; 11 marks the response entered-in-error.
    db.response(qr("p", "phq-9", [1] * 9), version="9")
    db.response(qr("p", "phq-9", [2] * 9, status="amended"), version="10")
    db.response(qr("q", "phq-9", [1] * 9), version="9")
    db.response(qr("q", "phq-9", [2] * 9, status="amended"), version="10")
    db.response(qr("q", "phq-9", [2] * 9, status="entered-in-error"), version="11")
    db.con.execute("UPDATE raw.questionnaire_response SET last_updated = NULL")
    db.score()
    total = db.total("p")
    assert (total["version_id"], total["status"], total["score"]) == ("10", "amended", 18)
    excluded = db.one("excluded_responses", "q")
    assert excluded is not None
    assert (excluded["version_id"], excluded["withdrawn_version"]) == ("11", "10")
