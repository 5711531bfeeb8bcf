"""One test per Questionnaire shape seen in the wild (docs/domain.md), each scored to the same PHQ-9/GAD-7.

The real HL7 SDC and NLM LHC-Forms copies live in tests/fixtures/fhir-examples/.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from demo.forms import FORMS
from fhir_mappings.registry import load_registry
from tests.support.scoring_kit import ScoringDB, qr

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"
PHQ = [0, 1, 2, 3, 0, 1, 2, 3, 1]  # total 13, item 9 = 1
GAD = [0, 1, 2, 3, 0, 1, 2]  # total 9


def _real(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def db(tmp_path) -> ScoringDB:
    return ScoringDB(registry=load_registry(tmp_path))


def _form_row(db: ScoringDB, response_id: str) -> dict:
    cur = db.con.execute(
        """SELECT f.* FROM staging.response_forms f JOIN staging.questionnaire_responses r
           ON r.source = f.source AND coalesce(r.questionnaire, '') = f.questionnaire
           WHERE r.response_id = ?""",
        [response_id],
    )
    cols = [d[0] for d in cur.description]
    return dict(zip(cols, cur.fetchall()[0], strict=True))


def test_real_hl7_sdc_response_scored_from_items_and_embedded_total_flagged(db):
    """HL7 SDC example: linkIds H1/T1/Qn in a group, scores on a contained ValueSet, answer codes without
    a system, an embedded total of 13 while the items sum to 10, no `source` (default rater)."""
    db.questionnaire(_real("hl7-sdc-phq9-questionnaire.json"))
    db.response(_real("hl7-sdc-phq9-response.json"))
    db.score()
    total = db.total("questionnaireresponse-sdc-profile-example-PHQ9")
    # items: 0 0 0 1 2 1 3 2 1 (Not at all x3, Several days, More than half, Several, Nearly every day ...)
    assert total["instrument"] == "phq9" and total["score"] == 10 and total["is_valid"]
    assert total["reported_total"] == 13 and total["reported_total_mismatch"] is True
    assert total["score_sources"] == "valueset:ordinalValue"
    assert (total["rater"], total["rater_basis"], total["patient_ref"]) == (
        "patient",
        "default",
        "Patient/proband",
    )
    form = _form_row(db, "questionnaireresponse-sdc-profile-example-PHQ9")
    assert (form["resolution"], form["recognised_by"]) == ("canonical-latest", "canonical_url")


def test_real_nlm_lhc_form_without_url_cited_by_server_reference(db):
    """NLM LHC-Forms: no url (responses cite Questionnaire/{id}), recognised by its LOINC panel code,
    linkIds /44250-9, LA answer codes without a system scored by the form's ordinalValue."""
    q = _real("nlm-lhcforms-phq9-questionnaire.json")
    db.questionnaire(q)
    response = qr("nlm", "phq-9-lhc", PHQ, total=13, difficulty=1, questionnaire=f"Questionnaire/{q['id']}")
    db.response(response)
    db.score()
    total = db.total("nlm")
    assert (total["score"], total["reported_total"], total["reported_total_mismatch"]) == (13, 13, False)
    assert total["score_sources"] == "ordinalValue" and total["questionnaire_id"] == q["id"]
    form = _form_row(db, "nlm")
    assert (form["resolution"], form["recognised_by"]) == ("reference", "questionnaire_code")


def test_site_sdc_form_with_ordinal_values(db):
    db.forms("phq-9")
    db.response(qr("site", "phq-9", PHQ, total=13))
    db.score()
    assert db.total("site")["score"] == 13 and db.total("site")["score_sources"] == "ordinalValue"


def test_vendor_form_with_random_linkids_item_codes_and_no_scores(db):
    """Recognised by its item codes (no panel code, unknown url); answers scored by the LOINC LA table."""
    db.forms("phq-9-vendor")
    db.response(qr("vendor", "phq-9-vendor", PHQ, difficulty=3))
    db.score()
    total = db.total("vendor")
    assert (total["score"], total["score_sources"], total["unmapped_answers"]) == (
        13,
        "registry:answer_scores",
        0,
    )
    assert _form_row(db, "vendor")["recognised_by"] == "item_codes"
    mapped = db.con.execute(
        "SELECT role, count(*) FROM staging.form_item_map WHERE questionnaire LIKE '%8f3a2c' GROUP BY 1"
    ).fetchall()
    assert dict(mapped)["ignored"] == 1  # the difficulty item 69722-7 is not scored


def test_item_weight_scores(db):
    db.forms("gad-7-vendor")
    db.response(qr("iw", "gad-7-vendor", GAD))
    db.score()
    assert (db.total("iw")["score"], db.total("iw")["score_sources"]) == (9, "itemWeight")


def test_legacy_questionnaire_ordinal_value_scores(db):
    db.forms("gad-7-legacy")
    db.response(qr("legacy", "gad-7-legacy", GAD, total=9))
    db.score()
    total = db.total("legacy")
    assert (total["score"], total["score_sources"], total["reported_total"]) == (
        9,
        "questionnaire-ordinalValue",
        9,
    )


def test_contained_codesystem_scores(db):
    """Scores on the concepts of a contained CodeSystem, bound through a contained ValueSet url."""
    form = copy.deepcopy(FORMS["gad-7"])
    form["id"], form["url"] = "gad-cs", "https://site.example/Questionnaire/gad-cs"
    form["contained"] = [
        {
            "resourceType": "CodeSystem",
            "id": "cs",
            "url": "https://site.example/cs/freq",
            "status": "active",
            "content": "complete",
            "concept": [
                {
                    "code": f"f{v}",
                    "extension": [
                        {"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": v}
                    ],
                }
                for v in range(4)
            ],
        }
    ]
    for item in form["item"]:
        item.pop("answerOption", None)
        item["answerValueSet"] = "https://site.example/cs/freq"
    db.questionnaire(form)
    response = qr("cs", "gad-7", GAD, questionnaire="https://site.example/Questionnaire/gad-cs")
    for item, v in zip(response["item"], GAD, strict=True):
        item["answer"] = [{"valueCoding": {"system": "https://site.example/cs/freq", "code": f"f{v}"}}]
    db.response(response)
    db.score()
    total = db.total("cs")
    assert (total["score"], total["score_sources"]) == (9, "valueset:ordinalValue")
    assert _form_row(db, "cs")["recognised_by"] == "questionnaire_code"


def test_plain_integer_boolean_and_yes_no_answers(db):
    db.forms("ors", "dai-10", "mars")
    db.response(qr("ors", "ors", [5, 6, 7, 8]))
    db.response(qr("dai", "dai-10", [True] * 10))
    db.response(qr("mars", "mars", [False] * 10))
    db.score()
    assert [db.total(r)["score"] for r in ("ors", "dai", "mars")] == [26, 2, 8]


def test_cited_version_not_on_the_source_scores_with_the_newest(db):
    db.forms("wai-sr")
    db.response(qr("w", "wai-sr", [4] * 12, questionnaire=FORMS["wai-sr"]["url"] + "|9.9"))
    db.score()
    assert db.total("w")["score"] == 48
    form = _form_row(db, "w")
    assert form["resolution"] == "canonical-other-version" and "9.9" in form["detail"]


def test_newest_version_chosen_when_the_canonical_has_none(db):
    old = copy.deepcopy(FORMS["srs"])
    new = copy.deepcopy(FORMS["srs"])
    old["id"], old["version"] = "srs-old", "1.2"
    new["id"], new["version"] = "srs-new", "1.10"  # natural order: 1.10 is newer than 1.2
    db.questionnaire(new)
    db.questionnaire(old)
    db.response(qr("s", "srs", [9, 9, 9, 9], questionnaire=FORMS["srs"]["url"]))
    db.score()
    assert _form_row(db, "s")["questionnaire_id"] == "srs-new"
    assert db.total("s")["score"] == 36


def test_registry_form_not_on_the_source_is_mapped_by_registry_linkids(db):
    """No Questionnaire landed: the registry's canonical URL and linkIds still map the items. Integer
    answers score as themselves; coded answers whose scores live only on the missing form cannot be
    scored, and say so rather than guess."""
    db.response(qr("s", "srs", [9, 8, 7, 10]))
    db.response(qr("w", "wai-sr", [2] * 12))
    db.score()
    assert db.total("s")["score"] == 34
    assert _form_row(db, "s")["resolution"] == "unresolved"
    row = db.one("unmapped_responses", "w")
    assert row is not None and row["reason"] == "unscoreable answer" and row["instrument"] == "wai_sr"


def test_site_file_maps_its_own_form_without_code_change(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "our_phq.yaml").write_text(
        """
extends: phq9
recognise: {canonical_urls: ['https://our-ehr.example/forms/phq']}
items:
"""
        + "".join(f"  - {{number: {n}, link_ids: [ourq{n}]}}\n" for n in range(1, 10))
        + "thresholds: {caseness: 11}\n"
    )
    db = ScoringDB(registry=load_registry(site))
    db.response(
        {
            "resourceType": "QuestionnaireResponse",
            "id": "ours",
            "questionnaire": "https://our-ehr.example/forms/phq",
            "status": "completed",
            "item": [
                {"linkId": f"ourq{n}", "answer": [{"valueCoding": {"code": "LA6570-1"}}]}
                for n in range(1, 10)
            ],
        }
    )
    db.score()
    total = db.total("ours")
    assert (total["instrument"], total["score"], total["registry_file"]) == ("phq9", 18, "our_phq.yaml")
