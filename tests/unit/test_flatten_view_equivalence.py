"""staging.questionnaire_answers from the ViewDefinition gives exactly the rows of the hand-written
flatten it replaced (kept as the oracle in tests/fixtures/sql/), on a generated clinic with planted
mess and on hand-made edge cases: so the marts built on it are unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from demo.generator import GeneratorConfig, generate
from fhir_mappings.flatten import build_questionnaire_answers
from pipelines.sqlfiles import install_shared_macros, run_sql
from pipelines.warehouse import ensure_raw_schema

ORACLE_SQL = (
    Path(__file__).resolve().parents[1] / "fixtures" / "sql" / "handwritten_questionnaire_answers.sql"
)


def _land(con: duckdb.DuckDBPyConnection, res: dict[str, Any], version: str, source: str = "s") -> None:
    con.execute(
        """INSERT INTO raw.questionnaire_response (source, resource_type, id, version_id,
               version_from_server, last_updated, content_sha256, resource, origin, run_id, fetched_at)
           VALUES (?, 'QuestionnaireResponse', ?, ?, true, NULL, 'h', ?::JSON, NULL, 'run', now())""",
        [source, res["id"], version, json.dumps(res)],
    )


def _assert_same_as_oracle(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    counts = build_questionnaire_answers(con)
    install_shared_macros(con)
    run_sql(con, ORACLE_SQL)
    new_columns = con.execute("DESCRIBE staging.questionnaire_answers").fetchall()
    old_columns = con.execute("DESCRIBE reference_answers").fetchall()
    assert [c[:2] for c in new_columns] == [c[:2] for c in old_columns]
    for a, b in (
        ("staging.questionnaire_answers", "reference_answers"),
        ("reference_answers", "staging.questionnaire_answers"),
    ):
        extra = con.execute(f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}").fetchall()
        assert extra == [], f"rows only in {a}: {extra[:3]}"
    assert counts["answers"] == con.execute("SELECT count(*) FROM reference_answers").fetchone()[0]
    return counts


@pytest.mark.parametrize("chunk", ["100000", "700"])
def test_a_generated_clinic_flattens_exactly_as_before(monkeypatch, chunk):
    monkeypatch.setenv("ALLIANCE_QI_FLATTEN_CHUNK", chunk)
    con = duckdb.connect()
    ensure_raw_schema(con)
    clinic = generate(GeneratorConfig(patients=20, seed=5, mess_rate=0.08))
    versions = [(v, r) for v, r in clinic.iter_versions() if r["resourceType"] == "QuestionnaireResponse"]
    assert any(v == "2" for v, _ in versions)  # amended / entered-in-error versions are there
    for version, res in versions:
        _land(con, res, version, source="a")
        _land(con, res, version, source="b")
    counts = _assert_same_as_oracle(con)
    assert counts["answers"] > 1000
    assert (counts["chunks"] > 1) == (chunk == "700")  # several chunks give the same rows as one


def test_edge_cases_flatten_exactly_as_before():
    def qr(rid: str, items: list[Any]) -> dict[str, Any]:
        return {"resourceType": "QuestionnaireResponse", "id": rid, "status": "completed", "item": items}

    deep: dict[str, Any] = {"linkId": "d7", "answer": [{"valueInteger": 7}]}
    for level in range(6, 0, -1):
        deep = {"linkId": f"d{level}", "item": [deep], "answer": [{"valueString": f"s{level}"}]}
    cases = [
        qr(
            "nolink-top",
            [
                {
                    "answer": [{"valueInteger": 1}],
                    "item": [{"linkId": "c", "answer": [{"valueBoolean": True}]}],
                }
            ],
        ),
        qr("nolink-nested", [{"linkId": "p", "item": [{"answer": [{"valueDecimal": 2.5}]}]}]),
        qr(
            "answer-items",
            [
                {
                    "linkId": "q",
                    "answer": [
                        {
                            "valueCoding": {"code": "y"},
                            "item": [{"linkId": "q.1", "answer": [{"valueDate": "2026-01-02"}]}],
                        },
                        {
                            "valueString": "two",
                            "item": [
                                {"linkId": "q.2", "answer": [{"valueQuantity": {"value": 3, "unit": "kg"}}]}
                            ],
                        },
                    ],
                    "item": [{"linkId": "q.0", "answer": [{"valueDateTime": "2026-01-02T03:04:05Z"}]}],
                }
            ],
        ),
        qr("deep", [deep]),
        qr(
            "types",
            [
                {
                    "linkId": "t",
                    "answer": [
                        {"valueInteger": "x"},
                        {"valueAttachment": {"url": "u"}},
                        {"valueDate": "not a date"},
                        {"valueBoolean": False},
                    ],
                }
            ],
        ),
        qr("empty", []),
        {"resourceType": "QuestionnaireResponse", "id": "no-items", "status": "completed"},
        qr("many", [{"linkId": f"m{i}", "answer": [{"valueInteger": i}]} for i in range(1, 13)]),
    ]
    con = duckdb.connect()
    ensure_raw_schema(con)
    for res in cases:
        _land(con, res, "1")
    assert _assert_same_as_oracle(con)["answers"] == 2 + 1 + 5 + 7 + 4 + 12


def test_a_changed_answers_view_changes_the_step_fingerprint(tmp_path, monkeypatch):
    """The answers step's rebuild fingerprint includes the ViewDefinition it compiles, so editing the
    view rebuilds staging.questionnaire_answers even when no response changed."""
    import fhir_mappings.flatten as flatten
    from fhir_mappings.tables import ANSWERS_STEP

    before = ANSWERS_STEP.fingerprint_text(None)
    assert before == ANSWERS_STEP.fingerprint_text(None)  # stable
    assert flatten.ANSWERS_VIEW in ANSWERS_STEP.files
    view = json.loads(flatten.ANSWERS_VIEW.read_text())
    copy = tmp_path / "questionnaire_answers.json"
    copy.write_text(json.dumps(view))  # the same meaning, other whitespace
    monkeypatch.setattr(flatten, "ANSWERS_VIEW", copy)
    assert ANSWERS_STEP.fingerprint_text(None) == before
    view["select"][1]["column"][0]["path"] = "linkId.first()"
    copy.write_text(json.dumps(view))
    assert ANSWERS_STEP.fingerprint_text(None) != before
