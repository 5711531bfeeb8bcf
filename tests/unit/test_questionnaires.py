"""Questionnaire resolution: answer scores from every place forms keep them, on real and generated forms."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from demo.forms import FORMS
from fhir_mappings.questionnaires import answer_scores, build_questionnaire_tables
from pipelines.warehouse import ensure_raw_schema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"


def _real(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("form", "n_scores", "source", "first"),
    [
        (
            _real("hl7-sdc-phq9-questionnaire.json"),
            36,
            "valueset:ordinalValue",
            ("H1/T1/Q1", "Not-at-all", 0.0),
        ),
        (_real("nlm-lhcforms-phq9-questionnaire.json"), 36, "ordinalValue", ("/44250-9", "LA6568-5", 0.0)),
        (FORMS["gad-7-vendor"], 28, "itemWeight", None),
        (FORMS["gad-7-legacy"], 28, "questionnaire-ordinalValue", None),
        (FORMS["wai-sr"], 60, "ordinalValue", ("wai-1", "1", 1.0)),
        (FORMS["phq-9-vendor"], 0, None, None),  # no scores on the form: the LOINC table is the fallback
    ],
)
def test_answer_scores_found_wherever_the_form_keeps_them(form, n_scores, source, first):
    scores = answer_scores(form)
    assert len(scores) == n_scores
    if source:
        assert {s.score_source for s in scores} == {source}
    if first:
        assert (scores[0].link_id, scores[0].code, scores[0].score) == first
    assert all(0 <= s.score <= 5 for s in scores)


def test_nlm_codes_have_no_system_and_scores_cover_zero_to_three():
    scores = answer_scores(_real("nlm-lhcforms-phq9-questionnaire.json"))
    assert {s.system for s in scores} == {None}
    assert {(s.code, s.score) for s in scores if s.link_id == "/44260-8"} == {
        ("LA6568-5", 0.0),
        ("LA6569-3", 1.0),
        ("LA6570-1", 2.0),
        ("LA6571-9", 3.0),
    }


def test_contained_codesystem_concepts_are_used():
    form = {
        "resourceType": "Questionnaire",
        "id": "q",
        "contained": [
            {
                "resourceType": "CodeSystem",
                "id": "cs",
                "url": "urn:cs",
                "concept": [
                    {
                        "code": "a",
                        "extension": [
                            {"url": "http://hl7.org/fhir/StructureDefinition/itemWeight", "valueInteger": 4}
                        ],
                    }
                ],
            }
        ],
        "item": [{"linkId": "x", "type": "choice", "answerValueSet": "urn:cs"}],
    }
    assert [(s.link_id, s.system, s.code, s.score) for s in answer_scores(form)] == [
        ("x", "urn:cs", "a", 4.0)
    ]


def test_tables_built_from_raw_latest_version():
    con = duckdb.connect()
    ensure_raw_schema(con)
    nlm = _real("nlm-lhcforms-phq9-questionnaire.json")
    for qid, form in (("nlm", nlm), ("wai", FORMS["wai-sr"])):
        con.execute(
            """INSERT INTO raw.questionnaire VALUES ('s', 'Questionnaire', ?, '1', true, now(), 'h',
                       ?::JSON, NULL, 'r', now(), false)""",
            [qid, json.dumps(form)],
        )
    counts = build_questionnaire_tables(con)
    assert counts == {"questionnaires": 2, "items": counts["items"], "answer_scores": 96}
    codes = con.execute("""SELECT codes FROM staging.questionnaire_items
                           WHERE questionnaire_id = 'nlm' AND link_id = '/44250-9'""").fetchall()
    assert codes == [(["44250-9"],)]
    again = build_questionnaire_tables(con)
    assert again == counts


@pytest.mark.parametrize("landing_order", [("9", "10"), ("10", "9")])
def test_questionnaire_version_10_is_newer_than_9_when_last_updated_is_missing(landing_order):
    # Folder drops often carry no meta.lastUpdated: versionId decides, as a number ("10" > "9"; as
    # text "9" would win). Each version has its own title and item so the winner is visible.
    con = duckdb.connect()
    ensure_raw_schema(con)
    for version in landing_order:
        form = {
            "resourceType": "Questionnaire",
            "id": "q",
            "title": f"version {version}",
            "item": [{"linkId": f"item-of-{version}", "type": "integer"}],
        }
        con.execute(
            """INSERT INTO raw.questionnaire VALUES ('s', 'Questionnaire', 'q', ?, true, NULL, 'h',
                       ?::JSON, NULL, 'r', now(), false)""",
            [version, json.dumps(form)],
        )
    assert build_questionnaire_tables(con)["questionnaires"] == 1
    assert con.execute("SELECT version_id, title FROM staging.questionnaires").fetchall() == [
        ("10", "version 10")
    ]
    assert con.execute("SELECT link_id FROM staging.questionnaire_items").fetchall() == [("item-of-10",)]
