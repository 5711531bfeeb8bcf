"""Set-based flattening of QuestionnaireResponses into one row per answer."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings.flatten import build_questionnaire_answers
from pipelines.warehouse import ensure_raw_schema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"


def _warehouse(responses: list[tuple[dict, str, str]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    ensure_raw_schema(con)
    for res, version, last_updated in responses:
        con.execute(
            """INSERT INTO raw.questionnaire_response VALUES
               ('s', 'QuestionnaireResponse', ?, ?, true, ?::TIMESTAMPTZ, 'h', ?::JSON,
                NULL, 'run', now(), false)""",
            [res["id"], version, last_updated, json.dumps(res)],
        )
    return con


def _qr(rid: str, items: list, status: str = "completed") -> dict:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "status": status,
        "questionnaire": "http://x.org/Questionnaire/f|2.0",
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "source": {"reference": "Patient/p1"},
        "author": {"reference": "Practitioner/t1"},
        "authored": "2026-02-03T10:00:00+01:00",
        "item": items,
    }


def test_real_hl7_sdc_response_gives_one_row_per_answer_in_order():
    res = json.loads((FIXTURES / "hl7-sdc-phq9-response.json").read_text())
    res["id"] = "sdc"
    con = _warehouse([(res, "1", "2026-01-01T00:00:00Z")])
    assert build_questionnaire_answers(con) == {"responses": 1, "answers": 10, "chunks": 1}
    rows = con.execute(
        "SELECT link_id, answer_type, coding_system, coding_code FROM staging.questionnaire_answers "
        "ORDER BY order_path"
    ).fetchall()
    assert [r[0] for r in rows[:9]] == [f"H1/T1/Q{i}" for i in range(1, 10)]
    assert rows[0][1:] == ("coding", None, "Not-at-all")  # real forms send codes without a system
    total = con.execute("SELECT quantity_value FROM staging.questionnaire_answers WHERE link_id = 'H1/TS'")
    assert total.fetchall() == [(13.0,)]


@pytest.mark.parametrize(
    ("answer", "column", "expected", "answer_type"),
    [
        ({"valueInteger": 7}, "value_integer", 7, "integer"),
        ({"valueDecimal": 2.5}, "value_decimal", 2.5, "decimal"),
        ({"valueBoolean": False}, "value_boolean", False, "boolean"),
        ({"valueString": "free text"}, "value_string", "free text", "string"),
        ({"valueDate": "2026-01-02"}, "CAST(value_date AS VARCHAR)", "2026-01-02", "date"),
        ({"valueDateTime": "2026-01-02T03:04:05Z"}, "value_datetime", "2026-01-02T03:04:05Z", "dateTime"),
        ({"valueQuantity": {"value": 3, "unit": "d"}}, "quantity_value", 3.0, "quantity"),
        (
            {"valueCoding": {"system": "http://loinc.org", "code": "LA6569-3", "display": "Several days"}},
            "coding_code",
            "LA6569-3",
            "coding",
        ),
    ],
)
def test_every_answer_type_lands_in_its_column(answer, column, expected, answer_type):
    con = _warehouse([(_qr("a", [{"linkId": "q1", "answer": [answer]}]), "1", "2026-01-01T00:00:00Z")])
    build_questionnaire_answers(con)
    row = con.execute(f"SELECT {column}, answer_type FROM staging.questionnaire_answers").fetchall()
    assert row == [(expected, answer_type)]


def test_nested_items_and_answer_items_are_reached_with_paths_and_response_fields():
    items = [
        {
            "linkId": "g",
            "item": [
                {
                    "linkId": "q1",
                    "answer": [
                        {"valueInteger": 1, "item": [{"linkId": "q1a", "answer": [{"valueInteger": 2}]}]}
                    ],
                },
                {
                    "linkId": "g2",
                    "item": [{"linkId": "q2", "answer": [{"valueInteger": 3}, {"valueInteger": 4}]}],
                },
            ],
        }
    ]
    con = _warehouse([(_qr("n", items), "1", "2026-01-01T00:00:00Z")])
    build_questionnaire_answers(con)
    rows = con.execute(
        """SELECT link_id, item_path, depth, answer_index, value_integer, subject_ref, encounter_ref,
                  source_ref, author_ref, questionnaire_url, questionnaire_version
           FROM staging.questionnaire_answers ORDER BY order_path, answer_index"""
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("q1", "g > q1", 2, 1, 1),
        ("q1a", "g > q1 > q1a", 3, 1, 2),
        ("q2", "g > g2 > q2", 3, 1, 3),
        ("q2", "g > g2 > q2", 3, 2, 4),
    ]
    assert rows[0][5:] == (
        "Patient/p1",
        "Encounter/e1",
        "Patient/p1",
        "Practitioner/t1",
        "http://x.org/Questionnaire/f",
        "2.0",
    )


def test_only_the_newest_version_is_flattened_and_rebuild_is_idempotent():
    v1 = _qr("r", [{"linkId": "q1", "answer": [{"valueInteger": 1}]}])
    v2 = _qr("r", [{"linkId": "q1", "answer": [{"valueInteger": 5}]}], status="amended")
    con = _warehouse([(v1, "1", "2026-01-01T00:00:00Z"), (v2, "2", "2026-01-02T00:00:00Z")])
    first = build_questionnaire_answers(con)
    snapshot = con.execute("SELECT * FROM staging.questionnaire_answers").fetchall()
    assert build_questionnaire_answers(con) == first == {"responses": 1, "answers": 1, "chunks": 1}
    assert con.execute("SELECT * FROM staging.questionnaire_answers").fetchall() == snapshot
    assert con.execute("SELECT status, value_integer FROM staging.questionnaire_answers").fetchall() == [
        ("amended", 5)
    ]


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=12),
    wrap=st.integers(min_value=0, max_value=3),
)
def test_answers_do_not_depend_on_group_nesting(values, wrap):
    flat = [{"linkId": f"q{i}", "answer": [{"valueInteger": v}]} for i, v in enumerate(values)]
    nested: list = flat
    for level in range(wrap):
        nested = [{"linkId": f"g{level}", "item": nested}]
    con = _warehouse(
        [(_qr("a", flat), "1", "2026-01-01T00:00:00Z"), (dict(_qr("b", nested)), "1", "2026-01-01T00:00:00Z")]
    )
    build_questionnaire_answers(con)
    got = dict(
        con.execute(
            """SELECT response_id, list((link_id, value_integer) ORDER BY order_path)
           FROM staging.questionnaire_answers GROUP BY 1"""
        ).fetchall()
    )
    assert got["a"] == got["b"]
    assert [v for _, v in got["a"]] == values


def test_chunked_flatten_gives_the_same_answers_as_one_chunk(monkeypatch):
    items = [{"linkId": f"q{i}", "answer": [{"valueInteger": i}]} for i in range(1, 4)]
    con = _warehouse([(_qr(f"r{n}", items), "1", "2026-01-01T00:00:00Z") for n in range(25)])
    monkeypatch.setenv("ALLIANCE_QI_FLATTEN_CHUNK", "1000")
    one = build_questionnaire_answers(con)
    whole = con.execute("SELECT * FROM staging.questionnaire_answers ORDER BY ALL").fetchall()
    monkeypatch.setenv("ALLIANCE_QI_FLATTEN_CHUNK", "4")
    many = build_questionnaire_answers(con)
    assert one["chunks"] == 1 and many["chunks"] == 7
    assert con.execute("SELECT * FROM staging.questionnaire_answers ORDER BY ALL").fetchall() == whole
    assert many["answers"] == one["answers"] == 75


@pytest.mark.parametrize("landing_order", [("9", "10"), ("10", "9")])
def test_version_10_is_newer_than_9_when_last_updated_is_missing(landing_order):
    # Folder drops often carry no meta.lastUpdated: versionId decides, as a number ("10" > "9").
    answers = {"9": 9, "10": 10}
    con = _warehouse(
        [
            (_qr("r", [{"linkId": "q1", "answer": [{"valueInteger": answers[v]}]}]), v, None)
            for v in landing_order
        ]
    )
    assert build_questionnaire_answers(con)["responses"] == 1
    assert con.execute("SELECT version_id FROM staging.questionnaire_responses").fetchall() == [("10",)]
    assert con.execute("SELECT version_id, value_integer FROM staging.questionnaire_answers").fetchall() == [
        ("10", 10)
    ]
