"""ViewDefinition compiler: SQL quoting, the FHIRPath parser, validation errors, and behaviour on DuckDB."""

from __future__ import annotations

import json

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings.views import (
    FhirPathError,
    ViewDefinitionError,
    build_view,
    compile_view,
    load_view_definition,
)
from fhir_mappings.views.compiler import REPEAT_MAX_DEPTH, REPEAT_TRAIL_URL
from fhir_mappings.views.fhirpath import Binary, Call, Lit, Member, parse
from fhir_mappings.views.sql import quote_identifier, sql_literal


def run(view: dict, resources: list[dict]) -> list[dict]:
    con = duckdb.connect()
    con.execute("CREATE TABLE src (id VARCHAR, resource JSON)")
    for r in resources:
        con.execute("INSERT INTO src VALUES (?, ?)", [r.get("id"), json.dumps(r)])
    cur = con.execute(compile_view(view, source_relation="src"))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# -- quoting ------------------------------------------------------------------------------------------


def test_quote_identifier_doubles_quotes_and_rejects_empty_names():
    assert quote_identifier("plain") == '"plain"'
    assert quote_identifier('a"b') == '"a""b"'
    with pytest.raises(ValueError):
        quote_identifier("")
    with pytest.raises(ValueError):
        quote_identifier("a\x00b")


def test_sql_literal_forms():
    assert sql_literal("it's") == "'it''s'"
    assert sql_literal(None) == "NULL"
    assert sql_literal(True) == "TRUE"
    assert sql_literal(7) == "CAST('7' AS BIGINT)"
    with pytest.raises(ValueError):
        sql_literal("a\x00")
    with pytest.raises(ValueError):
        sql_literal(float("nan"))


# one connection for every example: opening one per example is most of the time and trips deadlines
CON = duckdb.connect()


@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))))
def test_sql_literal_round_trips_any_string_through_duckdb(text):
    assert CON.execute(f"SELECT {sql_literal(text)}").fetchall()[0][0] == text


@settings(deadline=None)
@given(st.text(min_size=1, alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))))
def test_quote_identifier_round_trips_any_name_through_duckdb(name):
    cur = CON.execute(f"SELECT 1 AS {quote_identifier(name)}")
    assert cur.description[0][0] == name


# -- parser -------------------------------------------------------------------------------------------


def test_parser_precedence_and_invocations():
    assert parse("a or b and c") == Binary(
        "or", Member(None, "a"), Binary("and", Member(None, "b"), Member(None, "c"))
    )
    assert parse("name.where(use = 'x').family") == Member(
        Call(Member(None, "name"), "where", (Binary("=", Member(None, "use"), Lit("string", "x")),)), "family"
    )
    assert parse("1 + 2 * 3") == Binary(
        "+", Lit("integer", 1), Binary("*", Lit("integer", 2), Lit("integer", 3))
    )
    assert parse(r"'a\'b\u0041'") == Lit("string", "a'bA")
    assert parse("@2020-01-02T10:00:00Z") == Lit("datetime", "2020-01-02T10:00:00Z")


@pytest.mark.parametrize("text", ["@@", "name.", "(a", "a ]", "'open", "a ! b", ""])
def test_parser_rejects_bad_syntax(text):
    with pytest.raises(FhirPathError):
        parse(text)


# -- validation ---------------------------------------------------------------------------------------

PATIENT_ID = {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]}


@pytest.mark.parametrize(
    ("view", "reason"),
    [
        ({"select": PATIENT_ID["select"]}, "resource"),
        ({"resource": "Patient", "select": []}, "select"),
        ({"resource": "Patient", "select": [{"column": [{"name": 'a"b', "path": "id"}]}]}, "column name"),
        ({"resource": "Patient", "select": [{"column": [{"name": "a", "path": "id.nope()"}]}]}, "nope"),
        (
            {"resource": "Patient", "select": [{"forEch": "name", "column": [{"name": "a", "path": "id"}]}]},
            "forEch",
        ),
        ({"resource": "Patient", "select": [{"forEach": "name", "repeat": ["x"], "column": []}]}, "only one"),
        (
            {
                "resource": "Patient",
                "select": [{"column": [{"name": "a", "path": "id"}, {"name": "a", "path": "id"}]}],
            },
            "duplicate",
        ),
        ({**PATIENT_ID, "constant": [{"name": "c", "valueInteger": "1"}]}, "wrong type"),
        ({**PATIENT_ID, "where": [{"path": "'text'"}]}, "boolean"),
    ],
)
def test_invalid_views_are_rejected_with_a_reason(view, reason):
    with pytest.raises(ViewDefinitionError, match=reason):
        compile_view(view, source_relation="src")


def test_source_relation_must_be_a_plain_name():
    assert '"raw"."patient"' in compile_view(PATIENT_ID, source_relation="raw.patient")
    with pytest.raises(ViewDefinitionError, match="source relation"):
        compile_view(PATIENT_ID, source_relation="raw.patient; DROP TABLE x")


def test_loader_names_the_file_and_the_reason(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"resourceType": "ViewDefinition", **PATIENT_ID}))
    assert load_view_definition(good)["resource"] == "Patient"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ViewDefinitionError, match=r"broken\.json: not valid JSON"):
        load_view_definition(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"resource": "Patient", "select": [{"forEach": "@@"}]}))
    with pytest.raises(ViewDefinitionError, match=r"wrong\.json: .*forEach.*date/time literal"):
        load_view_definition(wrong)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"resourceType": "Patient"}))
    with pytest.raises(ViewDefinitionError, match=r"other\.json: resourceType is 'Patient'"):
        load_view_definition(other)


# -- behaviour ----------------------------------------------------------------------------------------


def test_string_values_with_quotes_are_compared_not_spliced():
    view = {
        "resource": "Patient",
        "constant": [{"name": "fam", "valueString": "O'Brien\\"}],
        "select": [{"column": [{"name": "id", "path": "id", "type": "id"}]}],
        "where": [{"path": "name.family = %fam"}],
    }
    rows = run(
        view,
        [
            {"resourceType": "Patient", "id": "a", "name": [{"family": "O'Brien\\"}]},
            {"resourceType": "Patient", "id": "b"},
        ],
    )
    assert rows == [{"id": "a"}]


def test_resources_of_another_type_in_the_source_are_ignored():
    rows = run(
        PATIENT_ID, [{"resourceType": "Patient", "id": "p"}, {"resourceType": "Observation", "id": "o"}]
    )
    assert rows == [{"id": '"p"'}]  # no type: the column is JSON


def nested_items(depth: int) -> dict:
    item: dict = {"linkId": str(depth)}
    for level in range(depth - 1, 0, -1):
        item = {"linkId": str(level), "item": [item]}
    return {"resourceType": "QuestionnaireResponse", "id": "qr", "item": [item]}


REPEAT_VIEW = {
    "resource": "QuestionnaireResponse",
    "select": [
        {
            "repeat": ["item", "answer.item"],
            "column": [
                {"name": "linkId", "path": "linkId", "type": "string"},
                {"name": "i", "path": "%rowIndex", "type": "integer"},
            ],
        }
    ],
}


def test_repeat_follows_any_depth_up_to_the_limit_in_document_order():
    # a table has no row order: %rowIndex is the document order
    rows = sorted(run(REPEAT_VIEW, [nested_items(REPEAT_MAX_DEPTH)]), key=lambda r: r["i"])
    assert [r["linkId"] for r in rows] == [str(n) for n in range(1, REPEAT_MAX_DEPTH + 1)]
    assert [r["i"] for r in rows] == list(range(REPEAT_MAX_DEPTH))


def test_repeat_deeper_than_the_limit_is_an_error_not_lost_rows():
    with pytest.raises(duckdb.Error, match="deeper than"):
        run(REPEAT_VIEW, [nested_items(REPEAT_MAX_DEPTH + 1)])
    # also when the too-deep item gives no row of its own (no answers for the nested forEach)
    with_answers = {
        "resource": "QuestionnaireResponse",
        "select": [
            {
                "repeat": ["item"],
                "select": [{"forEach": "answer", "column": [{"name": "a", "path": "value"}]}],
            }
        ],
    }
    with pytest.raises(duckdb.Error, match="deeper than"):
        run(with_answers, [nested_items(REPEAT_MAX_DEPTH + 1)])


def test_repeat_trail_gives_positions_and_labels_from_the_top():
    view = {
        "resource": "QuestionnaireResponse",
        "select": [
            {"column": [{"name": "id", "path": "getResourceKey()"}]},
            {
                "repeat": ["item", "answer.item"],
                "extension": [
                    {
                        "url": REPEAT_TRAIL_URL,
                        "extension": [
                            {"url": "positionColumn", "valueString": "pos"},
                            {"url": "labelColumn", "valueString": "links"},
                            {"url": "labelPath", "valueString": "linkId"},
                        ],
                    }
                ],
                "column": [{"name": "link", "path": "linkId", "type": "string"}],
            },
        ],
    }
    qr = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr",
        "item": [
            {"linkId": "a", "item": [{"linkId": "a1"}], "answer": [{"item": [{"linkId": "a2"}]}]},
            {"item": [{"linkId": "b1"}]},
        ],
    }
    rows = sorted(run(view, [qr]), key=lambda r: r["pos"])
    assert [(r["pos"], r["links"], r["link"]) for r in rows] == [
        ([1], ["a"], "a"),
        ([1, 1], ["a", "a1"], "a1"),
        ([1, 2], ["a", "a2"], "a2"),  # answer items follow the item's own items
        ([2], [None], None),
        ([2, 1], [None, "b1"], "b1"),
    ]
    # the list form (a repeat beside a forEach is not walked by the recursive CTE) gives the same trail
    listed = json.loads(json.dumps(view))
    listed["select"].append({"forEach": "item", "column": [{"name": "top", "path": "linkId"}]})
    assert "RECURSIVE" not in build_view(listed, source_relation="src").sql
    assert "RECURSIVE" in build_view(view, source_relation="src").sql
    list_rows = run(listed, [qr])
    assert len(list_rows) == 2 * len(rows)
    assert {(tuple(r["pos"]), tuple(r["links"]), r["link"]) for r in list_rows} == {
        (tuple(r["pos"]), tuple(r["links"]), r["link"]) for r in rows
    }
    with pytest.raises(ViewDefinitionError, match="labelColumn and labelPath together"):
        bad = json.loads(json.dumps(view))
        bad["select"][1]["extension"][0]["extension"].pop()
        build_view(bad, source_relation="src")


def test_column_types_and_collections():
    view = {
        "resource": "Observation",
        "select": [
            {
                "column": [
                    {"name": "n", "path": "value.ofType(Quantity).value", "type": "decimal"},
                    {"name": "codes", "path": "code.coding.code", "type": "code", "collection": True},
                    {"name": "coded", "path": "code.coding.exists()", "type": "boolean"},
                ]
            }
        ],
    }
    obs = {
        "resourceType": "Observation",
        "id": "o",
        "valueQuantity": {"value": 2.5},
        "code": {"coding": [{"code": "a"}, {"code": "b"}]},
    }
    compiled = build_view(view, source_relation="src")
    assert [c.sql_type for c in compiled.columns] == ["DOUBLE", "VARCHAR[]", "BOOLEAN"]
    assert run(view, [obs]) == [{"n": 2.5, "codes": ["a", "b"], "coded": True}]


def test_several_values_in_a_single_column_is_an_error():
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "g", "path": "name.given", "type": "string"}]}],
    }
    with pytest.raises(duckdb.Error, match="several"):
        run(view, [{"resourceType": "Patient", "id": "p", "name": [{"given": ["a", "b"]}]}])


def test_decimal_arithmetic_is_exact():
    view = {
        "resource": "Observation",
        "select": [
            {"column": [{"name": "v", "path": "value.ofType(Quantity).value * 2 + 1", "type": "decimal"}]}
        ],
    }
    rows = run(view, [{"resourceType": "Observation", "id": "o", "valueQuantity": {"value": 0.07}}])
    assert rows == [{"v": 1.14}]


def test_for_each_or_null_evaluates_its_body_on_an_empty_focus_like_the_reference_implementation():
    view = {
        "resource": "Patient",
        "select": [
            {"column": [{"name": "id", "path": "id", "type": "id"}]},
            {
                "forEachOrNull": "contact",
                "column": [
                    {"name": "i", "path": "%rowIndex", "type": "integer"},
                    {"name": "family", "path": "name.family", "type": "string"},
                    {"name": "given", "path": "name.given", "type": "string", "collection": True},
                ],
            },
        ],
    }
    with_nested = {
        "resource": "Patient",
        "select": [
            {"column": [{"name": "id", "path": "id", "type": "id"}]},
            {
                "forEachOrNull": "contact",
                "select": [{"forEach": "telecom", "column": [{"name": "t", "path": "value"}]}],
            },
        ],
    }
    patient = [{"resourceType": "Patient", "id": "p"}]
    assert run(view, patient) == [{"id": "p", "i": 0, "family": None, "given": []}]
    assert run(with_nested, patient) == []  # a nested forEach over nothing gives no row
