"""Scoring: hand-computed golden scores per instrument, status semantics, raters, unmapped reasons.

Each case lands Questionnaires and responses in a raw schema and runs the real staging and scoring
SQL (tests/support/scoring_kit.py). Expected values are worked out by hand from docs/domain.md, not by
the code.
"""

from __future__ import annotations

import copy

import pytest

from fhir_mappings.registry import load_registry
from tests.support.scoring_kit import ScoringDB, qr


@pytest.fixture
def db(tmp_path) -> ScoringDB:
    d = ScoringDB(registry=load_registry(tmp_path))  # empty site folder: the shipped registry only
    d.forms()
    return d


# --- golden scores, one block per instrument ----------------------------------------------------


def test_wai_sr_total_mean_and_goal_task_bond(db):
    # items 1..12 = 5 4 3 2 1 5 4 3 2 1 5 4
    # task 1,2,10,12 = 5+4+1+4 = 14 -> 3.5; goal 4,6,8,11 = 2+5+3+5 = 15 -> 3.75;
    # bond 3,5,7,9 = 3+1+4+2 = 10 -> 2.5; total 39; mean 39/12 = 3.25
    db.response(qr("w", "wai-sr", [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4]))
    db.score()
    rows = db.rows("w")
    assert {k: v["score"] for k, v in rows.items()} == {
        "total": 39,
        "mean": 3.25,
        "task": 3.5,
        "goal": 3.75,
        "bond": 2.5,
    }
    assert all(
        r["is_valid"] and r["instrument"] == "wai_sr" and r["rater"] == "patient" for r in rows.values()
    )
    assert rows["total"]["items_expected"] == 12 and rows["task"]["items_expected"] == 4
    assert rows["total"]["registry_file"] == "wai_sr.yaml" and rows["total"]["registry_version"] == "1.0"
    assert rows["total"]["score_sources"] == "ordinalValue"


def test_wai_sr_with_a_missing_item_is_invalid_where_the_item_counts(db):
    # item 3 (bond) missing: total, mean and bond are invalid, task and goal stay valid
    db.response(qr("w", "wai-sr", [5, 4, None, 2, 1, 5, 4, 3, 2, 1, 5, 4]))
    db.score()
    rows = db.rows("w")
    assert not rows["total"]["is_valid"] and rows["total"]["score"] is None
    assert rows["total"]["invalid_reason"] == "1 of 12 items missing (this instrument allows none)"
    assert rows["total"]["items_answered"] == 11
    assert not rows["bond"]["is_valid"] and not rows["mean"]["is_valid"]
    assert rows["task"]["score"] == 3.5 and rows["goal"]["score"] == 3.75


def test_therapist_form_is_clinician_rated(db):
    db.response(qr("t", "wai-sr-t", [3] * 11 + [4], source="Practitioner/th1"))
    db.score()
    total = db.total("t")
    assert (total["instrument"], total["score"], total["rater"]) == ("wai_therapist", 37, "clinician")
    assert total["practitioner_ref"] == "Practitioner/th1"
    assert db.rows("t")["task"]["score"] == 3.25  # items 1, 2, 10, 12 = 3, 3, 3, 4


@pytest.mark.parametrize(
    ("form", "values", "expected"),
    [
        ("srs", [9, 9, 8, 10], 36),
        ("srs", [0, 0, 0, 0], 0),
        ("srs", [10, 10, 10, 10], 40),
        ("ors", [5, 6, 7, 8], 26),
    ],
)
def test_srs_and_ors_sum_four_items(db, form, values, expected):
    db.response(qr("r", form, values))
    db.score()
    total = db.total("r")
    assert total["score"] == expected and total["is_valid"] and total["score_sources"] == "answer_value"


def test_item_outside_its_range_invalidates_the_score(db):
    db.response(qr("r", "srs", [11, 9, 8, 10]))
    db.score()
    total = db.total("r")
    assert not total["is_valid"] and total["score"] is None
    assert total["invalid_reason"] == "item 1 = 11 outside the item range 0..10"


@pytest.mark.parametrize(
    ("values", "score", "band", "risk"),
    [
        ([0] * 9, 0, "minimal", False),
        ([3] * 9, 27, "severe", True),
        ([1, 1, 1, 1, 0, 0, 0, 0, 0], 4, "minimal", False),
        ([1, 1, 1, 1, 1, 0, 0, 0, 0], 5, "mild", False),
        ([1, 1, 1, 1, 1, 1, 1, 1, 1], 9, "mild", True),
        ([2, 2, 2, 2, 2, 0, 0, 0, 0], 10, "moderate", False),
        ([2, 2, 2, 2, 2, 2, 2, 0, 0], 14, "moderate", False),
        ([3, 3, 3, 3, 3, 0, 0, 0, 0], 15, "moderately severe", False),
        ([3, 3, 3, 3, 3, 2, 2, 0, 0], 19, "moderately severe", False),
        ([3, 3, 3, 3, 3, 3, 2, 0, 0], 20, "severe", False),
        ([0, 0, 0, 0, 0, 0, 0, 0, 2], 2, "minimal", True),
    ],
)
def test_phq9_totals_bands_and_item9_risk(db, values, score, band, risk):
    db.response(qr("p", "phq-9", values, total=sum(values), difficulty=2))
    db.score()
    total = db.total("p")
    assert (total["score"], total["severity_band"], total["risk_flag"]) == (score, band, risk)
    assert total["reported_total"] == score and total["reported_total_mismatch"] is False


@pytest.mark.parametrize(
    ("values", "score", "reason"),
    [
        # one missing: 1+2+3+0+1+2+3+1 = 13 answered of 8 -> 13 x 9 / 8 = 14.625, rounded to 15
        ([1, 2, 3, 0, None, 1, 2, 3, 1], 15.0, None),
        # one missing: 9 -> 9 x 9 / 8 = 10.125 -> 10: a case (>= 10), as on a complete form
        ([1, 1, 1, 1, 1, 1, 1, 2, None], 10.0, None),
        # two missing: 8 -> 8 x 9 / 7 = 10.29 -> 10
        ([1, 1, 1, 1, 1, 1, 2, None, None], 10.0, None),
        # two missing: 3 x 7 = 21 -> 21 x 9 / 7 = 27
        ([3, 3, 3, 3, 3, 3, 3, None, None], 27.0, None),
        # two missing: 7 -> 9.0
        ([1, 1, 1, 1, 1, 1, 1, None, None], 9.0, None),
        ([1, 1, 1, 1, 1, 1, None, None, None], None, "3 of 9 items missing (at most 2 can be prorated)"),
    ],
)
def test_phq9_prorates_up_to_two_missing_items(db, values, score, reason):
    db.response(qr("p", "phq-9", values))
    db.score()
    total = db.total("p")
    assert total["score"] == score and total["invalid_reason"] == reason
    assert total["is_valid"] is (reason is None)
    assert total["prorated"] is (reason is None)
    assert total["items_answered"] == sum(v is not None for v in values)


def test_phq9_item9_unanswered_gives_no_risk_flag_but_a_prorated_score(db):
    db.response(qr("p", "phq-9", [1] * 8 + [None]))
    db.score()
    total = db.total("p")
    assert total["risk_flag"] is None and total["score"] == 9.0 and total["severity_band"] == "mild"


def test_gad7_total_band_and_proration(db):
    # 1+2+3+0+1+2+3 = 12 -> moderate (10-14)
    db.response(qr("g", "gad-7", [1, 2, 3, 0, 1, 2, 3], total=12))
    # 0+1+0+1+0+1 = 3 answered of 6 -> 3 x 7 / 6 = 3.5, rounded half up to 4 -> minimal (0-4)
    db.response(qr("h", "gad-7", [0, 1, 0, 1, 0, 1, None]))
    db.score()
    g, h = db.total("g"), db.total("h")
    assert (g["instrument"], g["score"], g["severity_band"], g["risk_flag"]) == ("gad7", 12, "moderate", None)
    assert (h["score"], h["severity_band"], h["prorated"]) == (4.0, "minimal", True)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        # True = "Yes". "No" scores 1 on items 1-6, 9, 10; "Yes" scores 1 on items 7, 8.
        ([False] * 10, 8),
        ([True] * 10, 2),
        ([False] * 6 + [True, True] + [False, False], 10),
        ([True] * 6 + [False, False] + [True, True], 0),
    ],
)
def test_mars_yes_no_keying(db, answers, expected):
    db.response(qr("m", "mars", answers))
    db.score()
    total = db.total("m")
    assert total["score"] == expected and total["score_sources"] == "registry:item_scores"


def _mars_with_generic_yes_no_scores() -> dict:
    """The demo MARS form whose options carry ordinalValue Yes = 1 / No = 0 on every item, as a generic
    yes/no answer list does: ignoring the instrument's keying (No scores 1 on items 1-6, 9, 10)."""
    from demo.forms import FORMS, ORDINAL_VALUE

    q = copy.deepcopy(FORMS["mars"])
    for item in q["item"]:
        for option in item["answerOption"]:
            score = 1 if option["valueCoding"]["code"] == "Y" else 0
            option["extension"] = [{"url": ORDINAL_VALUE, "valueDecimal": score}]
    return q


def test_registry_keying_wins_over_a_forms_generic_yes_no_scores_and_the_mismatch_is_a_finding(tmp_path):
    db = ScoringDB(registry=load_registry(tmp_path))
    db.questionnaire(_mars_with_generic_yes_no_scores())
    # Yes on items 1 and 7, No elsewhere. Registry: item 1 Yes = 0, item 7 Yes = 1, items 2-6, 9, 10
    # No = 1 each (7), item 8 No = 0: total 0 + 1 + 7 + 0 = 8. The form's own scores would give 2.
    answers = [True, False, False, False, False, False, True, False, False, False]
    db.response(qr("m", "mars", answers))
    db.response(qr("agree", "mars", [False] * 6 + [True, True] + [False, False]))
    db.score()
    total = db.total("m")
    assert total["score"] == 8 and total["score_sources"] == "registry:item_scores"
    assert total["form_score_mismatch"] is True
    # items 1-6, 9, 10: the form scores Yes 1 / No 0, the registry No 1 / Yes 0, so all eight differ;
    # items 7 and 8 agree (Yes 1, No 0)
    detail = total["form_score_mismatch_detail"]
    assert detail.startswith("item 1 (Y): form 1, registry 0; item 2 (N): form 0, registry 1")
    assert "item 7" not in detail and "item 8" not in detail and detail.count("item ") == 8
    # another response on the same form: scored 10 by the registry (the form would say 2), mismatching
    assert db.total("agree")["score"] == 10 and db.total("agree")["form_score_mismatch"] is True


def test_a_form_whose_scores_agree_with_the_registry_is_no_finding_and_a_form_without_scores_is_not_compared(
    tmp_path,
):
    from demo.forms import FORMS, ORDINAL_VALUE

    db = ScoringDB(registry=load_registry(tmp_path))
    agreeing = copy.deepcopy(FORMS["mars"])
    for i, item in enumerate(agreeing["item"], start=1):
        item["answerOption"] = copy.deepcopy(item["answerOption"])  # the form shares one list
        for option in item["answerOption"]:
            yes = option["valueCoding"]["code"] == "Y"
            option["extension"] = [{"url": ORDINAL_VALUE, "valueDecimal": int(yes == (i in (7, 8)))}]
    db.questionnaire(agreeing)
    db.response(qr("m", "mars", [False] * 10))
    db.score()
    assert (db.total("m")["score"], db.total("m")["form_score_mismatch"]) == (8, False)
    db2 = ScoringDB(registry=load_registry(tmp_path))
    db2.forms("mars")  # the demo form: no ordinalValue at all
    db2.response(qr("m", "mars", [False] * 10))
    db2.score()
    assert db2.total("m")["score"] == 8 and db2.total("m")["form_score_mismatch"] is None


def test_an_answer_the_registry_does_not_key_on_a_keyed_item_scores_nothing_not_the_forms_guess(tmp_path):
    db = ScoringDB(registry=load_registry(tmp_path))
    q = _mars_with_generic_yes_no_scores()
    # item 3's options are LOINC Yes/No codes the registry's MARS keying does not list
    q["item"][2]["answerOption"] = [
        {
            "valueCoding": {"system": "http://loinc.org", "code": "LA33-6", "display": "Yes"},
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": 1}],
        },
        {
            "valueCoding": {"system": "http://loinc.org", "code": "LA32-8", "display": "No"},
            "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": 0}],
        },
    ]
    db.questionnaire(q)
    response = qr("m", "mars", [False] * 10)
    response["item"][2]["answer"] = [{"valueCoding": {"system": "http://loinc.org", "code": "LA32-8"}}]
    db.response(response)
    db.score()
    assert db.rows("m") == {}
    unmapped = db.one("unmapped_responses", "m")
    assert unmapped is not None and unmapped["reason"] == "unscoreable answer"
    assert "item 3 (mars-3): LA32-8" in unmapped["detail"]


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        # "True" scores +1 on items 1,3,4,7,9,10; "False" scores +1 on items 2,5,6,8; else -1.
        ([True, False, True, True, False, False, True, False, True, True], 10),
        ([False, True, False, False, True, True, False, True, False, False], -10),
        ([True] * 10, 2),  # +6 -4
        ([False] * 10, -2),  # -6 +4
    ],
)
def test_dai10_true_false_keying(db, answers, expected):
    db.response(qr("d", "dai-10", answers))
    db.score()
    assert db.total("d")["score"] == expected


def test_reverse_keyed_items_from_a_site_instrument(tmp_path):
    """A site's older 7-point therapist form with a negatively worded item 2, added as a file only."""
    (tmp_path / "wai_s_t7.yaml").write_text(
        """
id: wai_s_t7
name: WAI-S therapist (7-point, site form)
registry_version: '0.1'
domain: alliance
default_rater: clinician
citation: site test form
recognise: {canonical_urls: ['https://site.example/Questionnaire/wai-s-t7']}
items:
  - {number: 1, link_ids: [q1]}
  - {number: 2, link_ids: [q2]}
  - {number: 3, link_ids: [q3]}
item_range: [1, 7]
reverse_keyed: [2]
scales:
  total: {items: [1, 2, 3], rule: sum, range: [3, 21]}
  mean: {items: [1, 2, 3], rule: mean, range: [1, 7]}
missing: {rule: invalid}
"""
    )
    db = ScoringDB(registry=load_registry(tmp_path))
    db.response(
        {
            "resourceType": "QuestionnaireResponse",
            "id": "r",
            "questionnaire": "https://site.example/Questionnaire/wai-s-t7",
            "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "item": [
                {"linkId": "q1", "answer": [{"valueInteger": 7}]},
                {"linkId": "q2", "answer": [{"valueInteger": 2}]},
                {"linkId": "q3", "answer": [{"valueInteger": 5}]},
            ],
        }
    )
    db.score()
    rows = db.rows("r")
    # 7 + (1 + 7 - 2 = 6) + 5 = 18; mean 6
    assert rows["total"]["score"] == 18 and rows["mean"]["score"] == 6
    # no source: the instrument's own rater; the form is not on any source, so the registry linkIds map it
    assert rows["total"]["rater"] == "clinician" and rows["total"]["rater_basis"] == "default"


# --- raters: from `source`, not `author` ---------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "author", "rater", "basis", "practitioner"),
    [
        ("Patient/p1", "Practitioner/th1", "patient", "source", "Practitioner/th1"),  # keyed in by clinician
        ("Patient/p1", "Patient/p1", "patient", "source", None),
        ("Practitioner/th1", "Practitioner/th1", "clinician", "source", "Practitioner/th1"),
        ("PractitionerRole/pr1", None, "clinician", "source", "PractitionerRole/pr1"),
        ("RelatedPerson/mum", "Practitioner/th1", "other", "source", "Practitioner/th1"),
        ("https://ehr.example/fhir/Patient/p1/_history/3", None, "patient", "source", None),
        (None, "Practitioner/th1", "patient", "default", "Practitioner/th1"),
    ],
)
def test_rater_comes_from_source_not_author(db, source, author, rater, basis, practitioner):
    db.response(qr("w", "wai-sr", [4] * 12, source=source, author=author))
    db.score()
    total = db.total("w")
    assert (total["rater"], total["rater_basis"], total["practitioner_ref"]) == (rater, basis, practitioner)
    assert total["patient_ref"] == "Patient/p1" and total["encounter_ref"] == "Encounter/e1"


# --- status semantics ----------------------------------------------------------------------------


def test_amended_version_supersedes_the_earlier_score(db):
    db.response(qr("p", "phq-9", [1] * 9, total=9), version="1")
    db.response(qr("p", "phq-9", [1] * 8 + [2], total=10, status="amended"), version="2")
    db.score()
    total = db.total("p")
    assert (total["score"], total["status"], total["version_id"]) == (10, "amended", "2")
    assert db.con.execute(
        "SELECT count(*) FROM staging.measure_scores WHERE response_id = 'p'"
    ).fetchall() == [(1,)]


def test_entered_in_error_withdraws_the_earlier_score(db):
    db.response(qr("p", "phq-9", [1] * 9), version="1")
    db.score()
    assert db.total("p")["score"] == 9
    db.response(qr("p", "phq-9", [1] * 9, status="entered-in-error"), version="2")
    db.score()
    assert db.rows("p") == {}
    excluded = db.one("excluded_responses", "p")
    assert excluded is not None
    assert (excluded["status"], excluded["withdrawn_version"]) == ("entered-in-error", "1")
    assert excluded["reason"] == "withdrawn: entered-in-error"
    assert excluded["detail"].endswith("it withdraws version 1 (completed or amended), landed earlier")


def test_entered_in_error_without_a_landed_earlier_version_names_no_withdrawn_version(db):
    # a first pull after the withdrawal: the server sends only the current (entered-in-error) version 3
    db.response(qr("p", "phq-9", [1] * 9, status="entered-in-error"), version="3")
    db.score()
    excluded = db.one("excluded_responses", "p")
    assert excluded is not None
    assert (excluded["version_id"], excluded["withdrawn_version"]) == ("3", None)
    assert excluded["detail"].endswith(
        "no earlier completed or amended version was landed, so no score here is withdrawn"
    )


@pytest.mark.parametrize("status", ["in-progress", "stopped"])
def test_unfinished_responses_stay_out_with_a_reason(db, status):
    db.response(qr("p", "phq-9", [1, 1, 1, None, None, None, None, None, None], status=status))
    db.score()
    assert db.rows("p") == {}
    excluded = db.one("excluded_responses", "p")
    assert excluded is not None and excluded["reason"] == f"not finished: {status}"
    assert excluded["withdrawn_version"] is None


# --- unmapped responses: every reason, none vanish ------------------------------------------------


def test_unknown_questionnaire(db):
    db.response(
        {
            "resourceType": "QuestionnaireResponse",
            "id": "u",
            "questionnaire": "http://other.example/Questionnaire/satisfaction|2",
            "status": "completed",
            "item": [{"linkId": "1", "answer": [{"valueInteger": 4}]}],
        }
    )
    db.score()
    row = db.one("unmapped_responses", "u")
    assert row is not None and row["reason"] == "unknown questionnaire"
    assert "not on any source and not in the instrument registry" in row["detail"]


def test_landed_questionnaire_that_is_no_instrument_is_unknown(db):
    db.questionnaire(
        {
            "resourceType": "Questionnaire",
            "id": "satisfaction",
            "url": "https://site.example/Questionnaire/satisfaction",
            "status": "active",
            "item": [{"linkId": "1", "type": "integer"}, {"linkId": "2", "type": "string"}],
        }
    )
    db.response(
        {
            "resourceType": "QuestionnaireResponse",
            "id": "u",
            "questionnaire": "https://site.example/Questionnaire/satisfaction",
            "status": "completed",
            "item": [{"linkId": "1", "answer": [{"valueInteger": 4}]}],
        }
    )
    db.score()
    row = db.one("unmapped_responses", "u")
    assert row is not None and row["reason"] == "unknown questionnaire"
    assert "Questionnaire/satisfaction" in row["detail"]


def test_literal_reference_to_a_missing_questionnaire_is_unresolvable(db):
    db.response(qr("u", "phq-9", [1] * 9, questionnaire="Questionnaire/does-not-exist"))
    db.score()
    row = db.one("unmapped_responses", "u")
    assert row is not None and row["reason"] == "unresolvable canonical"


def test_known_form_whose_linkids_map_to_nothing_is_unmapped_items(db):
    bad = qr("u", "srs", [9, 9, 9, 9])
    for item in bad["item"]:
        item["linkId"] = "x-" + item["linkId"]
    db.response(bad)
    db.score()
    row = db.one("unmapped_responses", "u")
    assert row is not None and (row["reason"], row["instrument"]) == ("unmapped items", "srs")
    assert "x-srs-goals" in row["detail"]


def test_answer_code_with_no_score_anywhere_is_unscoreable(db):
    bad = qr("u", "phq-9-vendor", [1] * 9)
    bad["item"][2]["answer"] = [{"valueCoding": {"system": "http://loinc.org", "code": "LA9999-9"}}]
    db.response(bad)
    db.score()
    row = db.one("unmapped_responses", "u")
    assert row is not None and row["reason"] == "unscoreable answer"
    assert "item 3" in row["detail"] and "LA9999-9" in row["detail"]


def test_an_item_answered_twice_is_invalid(db):
    twice = qr("p", "phq-9", [1] * 9)
    twice["item"].append({"linkId": "phq9-4", "answer": [{"valueCoding": {"code": "LA6571-9"}}]})
    db.response(twice)
    db.score()
    total = db.total("p")
    assert not total["is_valid"] and total["invalid_reason"] == "item(s) 4 answered more than once"


def test_every_response_lands_in_exactly_one_place(db):
    db.response(qr("a", "phq-9", [1] * 9))
    db.response(qr("b", "phq-9", [1] * 9, status="stopped"))
    db.response(qr("c", "phq-9", [1] * 9, questionnaire="Questionnaire/nope"))
    db.response(qr("d", "wai-sr", [4] * 12))
    counts = db.score()
    assert counts["responses"] == 4 and counts["unaccounted"] == 0
    assert (counts["scored_responses"], counts["excluded_responses"], counts["unmapped_responses"]) == (
        2,
        1,
        1,
    )


def test_scoring_twice_gives_identical_tables(db):
    db.response(qr("a", "phq-9", [1, 2, 3, 0, None, 1, 2, 3, 1]))
    db.response(qr("b", "mars", [True] * 10))
    db.score()
    first = db.con.execute("SELECT * FROM staging.measure_scores ORDER BY ALL").fetchall()
    db.score()
    assert db.con.execute("SELECT * FROM staging.measure_scores ORDER BY ALL").fetchall() == first


def test_instrument_scales_table_mirrors_the_registry(db):
    db.score()
    rows = db.con.execute(
        "SELECT instrument, scale, scale_min, scale_max, items_expected FROM staging.instrument_scales "
        "WHERE scale = 'total' ORDER BY 1"
    ).fetchall()
    assert ("dai10", "total", -10, 10, 10) in rows and ("phq9", "total", 0, 27, 9) in rows
    assert len(rows) == 9  # eight shipped instruments and the CBTSQ
