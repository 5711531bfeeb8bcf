"""Structural validation: what is rejected, what is only recorded, in both modes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from quality_checks.structural import StructuralValidator, normalize_path, touches

# Unchanged copies of public forms (sources and terms in tests/fixtures/fhir-examples/README.md).
EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"


def _nlm_phq9() -> dict:
    """The real NLM LHC-Forms PHQ-9 (tests/fixtures/fhir-examples), with an id as a server gives it."""
    path = EXAMPLES / "nlm-lhcforms-phq9-questionnaire.json"
    if not path.exists():  # committed with the repository
        pytest.fail(f"missing real-form fixture {path}")
    d = json.loads(path.read_text())
    d["id"] = "phq9-nlm"
    return d


@pytest.mark.parametrize(
    ("resource", "rejected", "reason_part"),
    [
        ({"resourceType": "QuestionnaireResponse", "id": "a", "status": "completed"}, False, None),
        ({"resourceType": "QuestionnaireResponse", "id": "a", "status": "done"}, True, "status"),
        (
            {
                "resourceType": "QuestionnaireResponse",
                "id": "a",
                "status": "completed",
                "authored": "last tuesday",
            },
            True,
            "authored",
        ),
        (
            {
                "resourceType": "QuestionnaireResponse",
                "id": "a",
                "status": "completed",
                "item": [{"item": [{"text": "no linkId"}]}],
            },
            True,
            "linkId",
        ),
        ({"resourceType": "Patient", "id": "p", "birthDate": "1980-13-45"}, True, "birthDate"),
        ({"resourceType": "Patient", "id": "p", "telecom": [{"rank": "first"}]}, False, None),
        ({"resourceType": "Encounter", "id": "e", "class": {"code": "AMB"}}, True, "status"),
        ({"resourceType": "Patient", "id": "bad id with spaces"}, True, "id"),
        ({"resourceType": "Patient"}, True, "id"),
        ({"resourceType": "NotAType", "id": "x"}, True, "unknown resource type"),
        ({"id": "x"}, True, "resourceType"),
        ("not an object", True, "unparseable"),
    ],
)
def test_default_mode_rejects_only_findings_on_used_elements(resource, rejected, reason_part):
    outcome = StructuralValidator().validate(resource)
    assert outcome.rejected is rejected
    if rejected:
        assert reason_part in (outcome.reason or "")
    else:
        assert outcome.reason is None


def test_real_nlm_form_is_kept_with_findings_by_default_and_rejected_when_strict():
    form = _nlm_phq9()
    default = StructuralValidator().validate(form)
    assert not default.rejected
    assert len(default.findings) >= 2
    assert all(not f.blocking for f in default.findings)
    assert any("optionPrefix" in f.path or "valueString" in f.path for f in default.findings)
    strict = StructuralValidator(mode="strict").validate(copy.deepcopy(form))
    assert strict.rejected
    assert all(f.blocking for f in strict.findings)


def test_expected_type_mismatch_is_rejected():
    outcome = StructuralValidator().validate(
        {"resourceType": "Patient", "id": "p"}, expected_type="Encounter"
    )
    assert outcome.rejected and "unexpected resourceType" in (outcome.reason or "")


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("item", 0, "answer", 0, "item", 1, "linkId"), "item.linkId"),
        (("item", 0, "item", 2, "item", 0, "answer", 0, "valueCoding"), "item.answer.valueCoding"),
        (("status",), "status"),
        (
            ("item", 2, "answerOption", 1, "extension", 0, "valueString"),
            "item.answerOption.extension.valueString",
        ),
    ],
)
def test_normalize_path_folds_nested_items(loc, expected):
    assert normalize_path(loc) == expected


def test_touches_matches_children_and_parents_not_siblings():
    used = ("item.answerOption.extension.valueDecimal", "status")
    assert touches("status", used)
    assert touches("item.answerOption", used)  # a whole parent broken
    assert touches("item.answerOption.extension.valueDecimal", used)
    assert not touches("item.answerOption.extension.valueString", used)
    assert not touches("statusReason", used)
    assert touches("", used)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(
    ("extra", "reason_part"),
    [
        ({"status": []}, "status"),  # unhashable code: the binding check raised TypeError before
        ({"status": {"x": 1}}, "status"),
        ({"_status": "2026"}, "unparseable"),  # FHIRPrimitiveExtension raised AttributeError before
    ],
)
def test_malformed_values_are_rejected_never_raised(extra, reason_part, fast_path):
    resource = {"resourceType": "QuestionnaireResponse", "id": "a", "status": "completed", **extra}
    outcome = StructuralValidator(fast_path=fast_path).validate(resource)
    assert outcome.rejected
    assert reason_part in (outcome.reason or "")


def _nested_items(depth: int) -> dict:
    item: dict = {"linkId": "x"}
    for _ in range(depth):
        item = {"linkId": "g", "item": [item]}
    return {"resourceType": "QuestionnaireResponse", "id": "a", "status": "completed", "item": [item]}


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(("depth", "rejected"), [(40, False), (3000, True)])
def test_deep_nesting_is_judged_not_raised(depth, rejected, fast_path):
    outcome = StructuralValidator(fast_path=fast_path).validate(_nested_items(depth))
    assert outcome.rejected is rejected
    if rejected:
        assert "recursion" in (outcome.reason or "")
