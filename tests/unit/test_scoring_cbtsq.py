"""CBTSQ scoring by hand: total, mean, behavioural-activation and cognitive-restructuring sums, and the
missing-items rule (docs/domain.md: any missing item invalidates the scales it belongs to)."""

from __future__ import annotations

import pytest

from fhir_mappings.registry import load_registry
from tests.support.scoring_kit import ScoringDB, qr


@pytest.fixture
def db(tmp_path) -> ScoringDB:
    d = ScoringDB(registry=load_registry(tmp_path))  # empty site folder: the shipped registry only
    d.forms("cbtsq")
    return d


def test_cbtsq_total_mean_and_subscales(db):
    # BA items 1-7 = 5 4 3 2 1 5 4 -> 24; CR items 8-16 = 3 2 1 5 4 3 2 1 5 -> 26
    # total 50; mean 50 / 16 = 3.125
    db.response(qr("c", "cbtsq", [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5]))
    db.score()
    rows = db.rows("c")
    assert {k: v["score"] for k, v in rows.items()} == {
        "total": 50,
        "mean": 3.125,
        "behavioral_activation": 24,
        "cognitive_restructuring": 26,
    }
    assert all(r["is_valid"] and r["instrument"] == "cbtsq" and r["domain"] == "skill" for r in rows.values())
    assert rows["total"]["rater"] == "patient" and rows["total"]["score_sources"] == "ordinalValue"
    assert rows["behavioral_activation"]["items_expected"] == 7
    assert rows["cognitive_restructuring"]["items_expected"] == 9


def test_cbtsq_floor_and_ceiling(db):
    db.response(qr("lo", "cbtsq", [1] * 16))
    db.response(qr("hi", "cbtsq", [5] * 16))
    db.score()
    lo, hi = db.rows("lo"), db.rows("hi")
    assert (lo["total"]["score"], lo["behavioral_activation"]["score"], lo["mean"]["score"]) == (16, 7, 1)
    assert (hi["total"]["score"], hi["cognitive_restructuring"]["score"], hi["mean"]["score"]) == (80, 45, 5)


def test_a_missing_cr_item_invalidates_total_mean_and_cr_but_not_ba(db):
    # item 10 (cognitive restructuring) unanswered; BA items 1-7 = 3 * 7 = 21 stays valid
    values: list[int | None] = [3] * 16
    values[9] = None
    db.response(qr("c", "cbtsq", values))
    db.score()
    rows = db.rows("c")
    assert rows["behavioral_activation"]["is_valid"] and rows["behavioral_activation"]["score"] == 21
    for scale in ("total", "mean", "cognitive_restructuring"):
        assert not rows[scale]["is_valid"] and rows[scale]["score"] is None, scale
    assert rows["total"]["invalid_reason"] == "1 of 16 items missing (this instrument allows none)"


def test_the_local_answer_codes_score_without_ordinal_values(db, tmp_path):
    """A copy of the form with no ordinalValue extensions still scores: the registry's answer_scores
    give code 'k' the score k."""
    import copy

    from demo.forms import FORMS

    form = copy.deepcopy(FORMS["cbtsq"])
    form["id"] = "cbtsq-plain"
    form["url"] = "http://alliance-qi.example.org/fhir/Questionnaire/cbtsq"
    form["version"] = "2.0"
    for item in form["item"]:
        for option in item["answerOption"]:
            option.pop("extension", None)
    db.questionnaire(form)
    response = qr("p", "cbtsq", [2] * 16)
    response["questionnaire"] = "http://alliance-qi.example.org/fhir/Questionnaire/cbtsq|2.0"
    db.response(response)
    db.score()
    total = db.rows("p")["total"]
    assert total["is_valid"] and total["score"] == 32
    assert total["score_sources"] == "registry:answer_scores"
