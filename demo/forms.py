"""Questionnaires of the synthetic clinic, as FHIR R4 SDC forms (plain JSON dicts).

The clinic's own forms live under one site canonical base with version 1.0. PHQ-9 and GAD-7 also come
in the shapes seen in the wild (docs/domain.md, "FHIR R4 facts"), so the pipeline's
form resolution and scoring are exercised on every route an answer score can take:

| id | shape | where the answer score lives |
|---|---|---|
| `phq-9`, `gad-7` | site SDC form, LOINC item codes | `answerOption` `ordinalValue` |
| `phq-9-lhc` | NLM LHC-Forms: no `url`, linkIds `/44250-9`, codes without system | `ordinalValue` |
| `phq-9-sdc` | HL7 SDC example: foreign url, `H1/T1/Q1`, contained ValueSet | `ordinalValue` on concepts |
| `phq-9-vendor` | vendor EHR: random linkIds, LOINC item codes only | nowhere: LOINC answer list |
| `gad-7-vendor` | vendor EHR, R5-style | `itemWeight` |
| `gad-7-legacy` | older site form | `questionnaire-ordinalValue` |

`response_items()` turns instrument-ordered answer values into the item tree a response to a given
form carries, so the generator never needs to know a form's linkIds or nesting.

Item texts of WAI-SR, SRS, ORS, MARS, DAI-10 and the CBTSQ are short paraphrases (the instruments are
copyrighted; the CBTSQ labels are the project's own, not the published wording); PHQ-9 and GAD-7
texts are the LOINC displays (Pfizer allows reproduction).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

SITE_BASE = "http://alliance-qi.example.org/fhir/Questionnaire/"
SITE_VERSION = "1.0"
SITE_PUBLISHER = "Alliance QI demo practice"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
ORDINAL_VALUE_LEGACY = "http://hl7.org/fhir/StructureDefinition/questionnaire-ordinalValue"
ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
OPTION_PREFIX = "http://hl7.org/fhir/StructureDefinition/questionnaire-optionPrefix"
CALCULATED_EXPRESSION = (
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
)
WAI_FREQUENCY_SYSTEM = "http://alliance-qi.example.org/CodeSystem/wai-frequency"
YES_NO_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0136"
# A local code system for the CBTSQ's frequency answers (the CBTSQ has no LOINC codes).
CBTSQ_FREQUENCY_SYSTEM = "http://alliance-qi.example.org/CodeSystem/cbtsq-frequency"
SDC_PHQ9_URL = "http://hl7.org/fhir/uv/sdc/Questionnaire/questionnaire-sdc-profile-example-PHQ9"
VENDOR_PHQ9_URL = "http://vendor-ehr.example.com/forms/8f3a2c"
VENDOR_GAD7_URL = "http://vendor-ehr.example.com/forms/c41d07"
# A form no registry knows: responses to it must end up "unmapped", never silently dropped.
UNKNOWN_QUESTIONNAIRE = "http://other-clinic.example.net/Questionnaire/unknown-form|2"

WAI_FREQUENCY = [(1, "Seldom"), (2, "Sometimes"), (3, "Fairly often"), (4, "Very often"), (5, "Always")]
# LOINC answer list LL358-3, in score order 0..3.
PHQ_ANSWERS = [
    ("LA6568-5", "Not at all"),
    ("LA6569-3", "Several days"),
    ("LA6570-1", "More than half the days"),
    ("LA6571-9", "Nearly every day"),
]
# The HL7 SDC example's own codes (note the spaces in two of them, exactly as published).
SDC_ANSWERS = [
    ("Not-at-all", "Not at all"),
    ("Several-days", "Several days"),
    ("More than half the days", "More than half the days"),
    ("Nearly every day", "Nearly every day"),
]
# Difficulty item 69722-7 (not scored). LOINC: LA6575-0 is "Very difficult" and LA6574-3 is
# "Extremely difficult" (as in NLM's published PHQ-9 form), so the list is not in code order.
DIFFICULTY_ANSWERS = [
    ("LA6572-7", "Not difficult at all"),
    ("LA6573-5", "Somewhat difficult"),
    ("LA6575-0", "Very difficult"),
    ("LA6574-3", "Extremely difficult"),
]
YES_NO = {True: ("Y", "Yes"), False: ("N", "No")}

PHQ9_PANEL = ("44249-1", "PHQ-9 quick depression assessment panel")
PHQ9_TOTAL = ("44261-6", "Patient health questionnaire 9 item total score")
PHQ9_DIFFICULTY = (
    "69722-7",
    "How difficult have these problems made it for you to do your work, take care of things at home, "
    "or get along with other people?",
)
PHQ9_ITEMS = [
    ("44250-9", "Little interest or pleasure in doing things"),
    ("44255-8", "Feeling down, depressed, or hopeless"),
    ("44259-0", "Trouble falling or staying asleep, or sleeping too much"),
    ("44254-1", "Feeling tired or having little energy"),
    ("44251-7", "Poor appetite or overeating"),
    (
        "44258-2",
        "Feeling bad about yourself-or that you are a failure or have let yourself or your family down",
    ),
    ("44252-5", "Trouble concentrating on things, such as reading the newspaper or watching television"),
    (
        "44253-3",
        "Moving or speaking so slowly that other people could have noticed. Or the opposite-being so "
        "fidgety or restless that you have been moving around a lot more than usual",
    ),
    ("44260-8", "Thoughts that you would be better off dead, or of hurting yourself in some way"),
]
GAD7_PANEL = ("69737-5", "Generalized anxiety disorder 7 item (GAD-7)")
GAD7_TOTAL = ("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]")
GAD7_ITEMS = [
    ("69725-0", "Feeling nervous, anxious or on edge"),
    ("68509-9", "Not being able to stop or control worrying"),
    ("69733-4", "Worrying too much about different things"),
    ("69734-2", "Trouble relaxing"),
    ("69735-9", "Being so restless that it is hard to sit still"),
    ("69689-8", "Becoming easily annoyed or irritable"),
    ("69736-7", "Feeling afraid as if something awful might happen"),
]
# WAI-SR (Hatcher & Gillaspy 2006), paraphrased. Task 1,2,10,12; Goal 4,6,8,11; Bond 3,5,7,9.
WAI_CLIENT_TEXT = [
    "Clearer how I might be able to change",
    "Therapy gives me new ways of looking at my problem",
    "I believe my therapist likes me",
    "We collaborate on setting goals",
    "We respect each other",
    "We work towards mutually agreed goals",
    "My therapist appreciates me",
    "We agree on what is important to work on",
    "My therapist cares about me even when I do things they do not approve of",
    "What I do in therapy will help me make the changes I want",
    "We understand what changes would be good for me",
    "The way we work on my problem is correct",
]
WAI_THERAPIST_TEXT = [
    "The client is clearer how they might be able to change",
    "Our work gives the client new ways of looking at the problem",
    "I believe the client likes me",
    "We collaborate on setting goals",
    "We respect each other",
    "We work towards mutually agreed goals",
    "I appreciate the client",
    "We agree on what is important to work on",
    "I care about the client even when they do things I do not approve of",
    "The client feels our work will help them make the changes they want",
    "We understand what changes would be good for the client",
    "The client believes the way we work on the problem is correct",
]
SRS_ITEMS = [
    ("srs-relationship", "Relationship: I felt heard, understood and respected"),
    ("srs-goals", "Goals and topics: we worked on what I wanted to work on"),
    ("srs-approach", "Approach or method: the approach is a good fit for me"),
    ("srs-overall", "Overall: today's session was right for me"),
]
ORS_ITEMS = [
    ("ors-individual", "Individually: personal well-being"),
    ("ors-interpersonal", "Interpersonally: family and close relationships"),
    ("ors-social", "Socially: work, school and friendships"),
    ("ors-overall", "Overall: general sense of well-being"),
]
# MARS (Thompson 2000), paraphrased. "No" is adherent on 1-6, 9, 10; "Yes" on 7, 8.
MARS_TEXT = [
    "Do you ever forget to take your medication?",
    "Are you careless at times about taking your medication?",
    "When you feel better, do you sometimes stop taking it?",
    "If you feel worse on it, do you sometimes stop taking it?",
    "I take my medication only when I am sick",
    "It is unnatural for my mind and body to be controlled by medication",
    "My thoughts are clearer on medication",
    "By staying on medication I can prevent getting sick",
    "I feel weird, like a zombie, on medication",
    "Medication makes me feel tired and sluggish",
]
MARS_ADHERENT_ANSWER = [False, False, False, False, False, False, True, True, False, False]
# DAI-10 (Hogan 1983), paraphrased. "True" is positive on 1,3,4,7,9,10; "False" on 2,5,6,8.
DAI_TEXT = [
    "For me the good things about medication outweigh the bad",
    "I feel strange, doped up, on medication",
    "I take medication of my own free choice",
    "Medication makes me feel more relaxed",
    "Medication makes me feel tired and sluggish",
    "I take medication only when I feel ill",
    "I feel more normal on medication",
    "It is unnatural for my mind and body to be controlled by medication",
    "My thoughts are clearer on medication",
    "Taking medication will prevent me from having a breakdown",
]
DAI_POSITIVE_ANSWER = [True, False, True, True, False, False, True, False, True, True]
# CBTSQ (Jacob, Christopher & Neuhaus 2011): short labels of the project's own, not the published item
# wording. Items 1-7 behavioural activation, 8-16 cognitive restructuring (registry cbtsq.yaml).
CBTSQ_TEXT = [
    "Planned activities for the week",
    "Did an enjoyable activity when low",
    "Broke a big task into small steps",
    "Kept to a daily routine",
    "Did something that gave a sense of achievement",
    "Got active instead of withdrawing",
    "Scheduled time with other people",
    "Noticed an upsetting thought",
    "Linked a thought to a feeling",
    "Looked at the evidence for a thought",
    "Considered another way of seeing a situation",
    "Named a thinking trap",
    "Wrote down a thought to examine it",
    "Came up with a more balanced thought",
    "Tested a belief in practice",
    "Reminded myself of a balanced view when upset",
]
CBTSQ_FREQUENCY = [(1, "Never"), (2, "Rarely"), (3, "Sometimes"), (4, "Often"), (5, "Always")]

# Vendor linkIds look random but are fixed, so responses stay deterministic.
VENDOR_PHQ9_LINK_IDS = [
    "q_7f2a91",
    "q_1c9e04",
    "q_b83d27",
    "q_04ef5a",
    "q_e61b30",
    "q_9ad4c8",
    "q_3b70f2",
    "q_d25a6e",
    "q_58c1b9",
]
VENDOR_PHQ9_DIFFICULTY = "q_c0f7d3"
VENDOR_GAD7_LINK_IDS = [
    "fld-3a91c2",
    "fld-8e02b4",
    "fld-51d7e9",
    "fld-c6a310",
    "fld-07bf5d",
    "fld-e49a28",
    "fld-2d63f1",
]


@dataclass(frozen=True)
class FormLayout:
    """How answers to one form are laid out in a response.

    `answer_kind` names the answer encoding: `wai` (valueCoding in the WAI frequency system),
    `integer`, `loinc` (LA code with system), `loinc-nosystem`, `sdc` (SDC example codes without
    system), `yes-no` (v2-0136 coding), `boolean` or `cbtsq` (valueCoding in the CBTSQ frequency
    system).
    """

    form_id: str
    instrument: str
    link_ids: tuple[str, ...]
    answer_kind: str
    item_group: tuple[str, ...] = ()
    total_link_id: str | None = None
    total_kind: str | None = None  # integer | decimal | quantity
    total_group: tuple[str, ...] = ()
    difficulty_link_id: str | None = None
    echo_text: bool = False  # LHC-Forms and the SDC example copy item text into responses
    texts: tuple[str, ...] = ()
    total_first: bool = False  # the NLM form puts its total item before the difficulty item


def _coding(system: str | None, code: str, display: str) -> dict[str, Any]:
    coding: dict[str, Any] = {}
    if system:
        coding["system"] = system
    coding["code"] = code
    coding["display"] = display
    return coding


def _scored_option(
    system: str | None, code: str, display: str, score: int, score_url: str | None
) -> dict[str, Any]:
    option: dict[str, Any] = {}
    if score_url:
        option["extension"] = [{"url": score_url, "valueDecimal": score}]
    option["valueCoding"] = _coding(system, code, display)
    return option


def _site_header(form_id: str, name: str, title: str, code: tuple[str, str] | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": form_id,
        "meta": {"profile": ["http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire"]},
        "url": SITE_BASE + form_id,
        "version": SITE_VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "subjectType": ["Patient"],
        "date": "2025-11-01",
        "publisher": SITE_PUBLISHER,
    }
    if code:
        q["code"] = [_coding(LOINC, code[0], code[1])]
    return q


def _total_item(link_id: str, code: tuple[str, str], item_type: str, expression: str) -> dict[str, Any]:
    return {
        "extension": [
            {
                "url": CALCULATED_EXPRESSION,
                "valueExpression": {"language": "text/fhirpath", "expression": expression},
            }
        ],
        "linkId": link_id,
        "code": [_coding(LOINC, code[0], code[1])],
        "text": code[1],
        "type": item_type,
        "readOnly": True,
    }


def _wai_form(form_id: str, prefix: str, name: str, title: str, texts: list[str]) -> dict[str, Any]:
    q = _site_header(form_id, name, title)
    options = [_scored_option(WAI_FREQUENCY_SYSTEM, str(v), d, v, ORDINAL_VALUE) for v, d in WAI_FREQUENCY]
    q["item"] = [
        {"linkId": f"{prefix}-{i}", "text": text, "type": "choice", "required": True, "answerOption": options}
        for i, text in enumerate(texts, start=1)
    ]
    return q


def _integer_form(form_id: str, name: str, title: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    q = _site_header(form_id, name, title)
    q["item"] = [
        {
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 0},
                {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 10},
            ],
            "linkId": link_id,
            "text": text,
            "type": "integer",
            "required": True,
        }
        for link_id, text in items
    ]
    return q


def _phq_options(system: str | None, score_url: str | None) -> list[dict[str, Any]]:
    return [
        _scored_option(system, code, display, score, score_url)
        for score, (code, display) in enumerate(PHQ_ANSWERS)
    ]


def _difficulty_item(link_id: str, system: str | None) -> dict[str, Any]:
    return {
        "linkId": link_id,
        "code": [_coding(LOINC, PHQ9_DIFFICULTY[0], PHQ9_DIFFICULTY[1])],
        "text": PHQ9_DIFFICULTY[1],
        "type": "choice",
        "required": False,
        "answerOption": [{"valueCoding": _coding(system, c, d)} for c, d in DIFFICULTY_ANSWERS],
    }


def _phq9_site() -> dict[str, Any]:
    q = _site_header("phq-9", "PHQ9", "Patient Health Questionnaire (PHQ-9)", PHQ9_PANEL)
    items: list[dict[str, Any]] = [
        {
            "linkId": f"phq9-{i}",
            "code": [_coding(LOINC, code, text)],
            "text": text,
            "type": "choice",
            "required": True,
            "answerOption": _phq_options(LOINC, ORDINAL_VALUE),
        }
        for i, (code, text) in enumerate(PHQ9_ITEMS, start=1)
    ]
    items.append(_difficulty_item("phq9-difficulty", LOINC))
    items.append(
        _total_item("phq9-total", PHQ9_TOTAL, "integer", "%resource.item.answer.value.ordinal().sum()")
    )
    q["item"] = items
    return q


def _phq9_lhc(quirks: bool) -> dict[str, Any]:
    """NLM LHC-Forms shape: no url (responses say `Questionnaire/phq-9-lhc`), codes without system."""
    q: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": "phq-9-lhc",
        "meta": {
            "profile": ["http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire|2.7"],
            "tag": [{"code": "lformsVersion: 25.0.0"}],
        },
        "identifier": [{"system": LOINC, "value": PHQ9_PANEL[0]}],
        "name": PHQ9_PANEL[1],
        "title": PHQ9_PANEL[1],
        "status": "active",
        "subjectType": ["Patient", "Person"],
        "code": [_coding(LOINC, PHQ9_PANEL[0], PHQ9_PANEL[1])],
    }
    items: list[dict[str, Any]] = []
    for i, (code, text) in enumerate(PHQ9_ITEMS):
        options = []
        for score, (a_code, a_display) in enumerate(PHQ_ANSWERS):
            prefix: Any = str(score)
            # NLM's published form has exactly one prefix written as a JSON number (item 3, answer 1).
            # It breaks the R4 datatype of an element nobody scores with, so it must not block scoring.
            if quirks and i == 2 and score == 1:
                prefix = 1
            options.append(
                {
                    "extension": [
                        {"url": OPTION_PREFIX, "valueString": prefix},
                        {"url": ORDINAL_VALUE, "valueDecimal": score},
                    ],
                    "valueCoding": _coding(None, a_code, a_display),
                }
            )
        items.append(
            {
                "type": "choice",
                "required": i < 8,
                "linkId": f"/{code}",
                "code": [_coding(LOINC, code, text)],
                "text": text,
                "answerOption": options,
            }
        )
    items.append(
        {
            "type": "decimal",
            "required": False,
            "linkId": f"/{PHQ9_TOTAL[0]}",
            "code": [_coding(LOINC, PHQ9_TOTAL[0], PHQ9_TOTAL[1])],
            "text": PHQ9_TOTAL[1],
            "readOnly": True,
        }
    )
    difficulty = _difficulty_item(f"/{PHQ9_DIFFICULTY[0]}", None)
    items.append(difficulty)
    q["item"] = items
    return q


def _phq9_sdc() -> dict[str, Any]:
    """HL7 SDC example shape: only the total is coded; scores on a contained ValueSet's concepts."""
    concepts = [
        {"extension": [{"url": ORDINAL_VALUE, "valueDecimal": score}], "code": code, "display": display}
        for score, (code, display) in enumerate(SDC_ANSWERS)
    ]
    questions = [
        {"linkId": f"H1/T1/Q{i}", "text": text + "?", "type": "choice", "answerValueSet": "#VSit"}
        for i, (_, text) in enumerate(PHQ9_ITEMS, start=1)
    ]
    total = {
        "extension": [
            {
                "url": CALCULATED_EXPRESSION,
                "valueExpression": {
                    "language": "text/fhirpath",
                    "name": "score",
                    "expression": "%resource.answers().value.ordinal().sum()",
                },
            }
        ],
        "linkId": "H1/TS",
        "code": [
            _coding(
                LOINC, PHQ9_TOTAL[0], "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"
            )
        ],
        "text": "Patient health questionnaire 9 item total score",
        "type": "quantity",
    }
    return {
        "resourceType": "Questionnaire",
        "id": "phq-9-sdc",
        "meta": {"profile": ["http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire|3.0.0"]},
        "contained": [
            {
                "resourceType": "ValueSet",
                "id": "VSit",
                "url": "http://hl7.org/fhir/uv/sdc/ValueSet/VSPHQ9",
                "name": "VSPHQ9",
                "status": "draft",
                "immutable": True,
                "compose": {
                    "include": [
                        {"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/CSPHQ9", "concept": concepts}
                    ]
                },
            }
        ],
        "url": SDC_PHQ9_URL,
        "version": "0.0.1",
        "name": "SDCPHQ9",
        "title": "Patient Health Questionnaire - 9 Item",
        "status": "active",
        "subjectType": ["Patient"],
        "item": [
            {
                "linkId": "H1",
                "text": "PHQ-9",
                "type": "group",
                "item": [
                    {
                        "linkId": "H1/T1",
                        "text": "Over the last two weeks, how often have you been bothered by any of the "
                        "following problems?",
                        "type": "group",
                        "item": questions,
                    },
                    total,
                ],
            }
        ],
    }


def _phq9_vendor() -> dict[str, Any]:
    """Vendor EHR shape: random linkIds, LOINC item codes and LA answers, no scores anywhere."""
    items: list[dict[str, Any]] = [
        {
            "linkId": link_id,
            "code": [_coding(LOINC, code, text)],
            "text": text,
            "type": "choice",
            "answerOption": [{"valueCoding": _coding(LOINC, c, d)} for c, d in PHQ_ANSWERS],
        }
        for link_id, (code, text) in zip(VENDOR_PHQ9_LINK_IDS, PHQ9_ITEMS, strict=True)
    ]
    items.append(_difficulty_item(VENDOR_PHQ9_DIFFICULTY, LOINC))
    return {
        "resourceType": "Questionnaire",
        "id": "phq-9-vendor",
        "url": VENDOR_PHQ9_URL,
        "version": "7",
        "name": "DepressionScreenPHQ9",
        "title": "Depression screen (PHQ-9)",
        "status": "active",
        "subjectType": ["Patient"],
        "publisher": "Vendor EHR Inc.",
        "item": items,
    }


def _gad7(form_id: str, score_url: str) -> dict[str, Any]:
    """GAD-7 site form (`ordinalValue`) or its legacy variant (`questionnaire-ordinalValue`)."""
    legacy = form_id == "gad-7-legacy"
    title = "Generalized Anxiety Disorder 7 (GAD-7)" + (" (legacy form)" if legacy else "")
    q = _site_header(form_id, "GAD7Legacy" if legacy else "GAD7", title, GAD7_PANEL)
    prefix = "g7q" if legacy else "gad7-"
    items: list[dict[str, Any]] = [
        {
            "linkId": f"{prefix}{i}",
            "code": [_coding(LOINC, code, text)],
            "text": text,
            "type": "choice",
            "required": True,
            "answerOption": _phq_options(LOINC, score_url),
        }
        for i, (code, text) in enumerate(GAD7_ITEMS, start=1)
    ]
    total_link = "g7total" if legacy else "gad7-total"
    items.append(
        _total_item(total_link, GAD7_TOTAL, "integer", "%resource.item.answer.value.ordinal().sum()")
    )
    q["item"] = items
    return q


def _gad7_vendor() -> dict[str, Any]:
    """Vendor GAD-7 with R5-style `itemWeight` scores and random linkIds."""
    items = [
        {
            "linkId": link_id,
            "code": [_coding(LOINC, code, text)],
            "text": text,
            "type": "choice",
            "answerOption": _phq_options(LOINC, ITEM_WEIGHT),
        }
        for link_id, (code, text) in zip(VENDOR_GAD7_LINK_IDS, GAD7_ITEMS, strict=True)
    ]
    return {
        "resourceType": "Questionnaire",
        "id": "gad-7-vendor",
        "url": VENDOR_GAD7_URL,
        "version": "7",
        "name": "AnxietyScreenGAD7",
        "title": "Anxiety screen (GAD-7)",
        "status": "active",
        "subjectType": ["Patient"],
        "publisher": "Vendor EHR Inc.",
        "code": [_coding(LOINC, GAD7_PANEL[0], GAD7_PANEL[1])],
        "item": items,
    }


def _mars() -> dict[str, Any]:
    q = _site_header("mars", "MARS", "Medication Adherence Rating Scale (MARS)")
    options = [{"valueCoding": _coding(YES_NO_SYSTEM, c, d)} for c, d in (YES_NO[True], YES_NO[False])]
    q["item"] = [
        {"linkId": f"mars-{i}", "text": text, "type": "choice", "required": True, "answerOption": options}
        for i, text in enumerate(MARS_TEXT, start=1)
    ]
    return q


def _dai10() -> dict[str, Any]:
    q = _site_header("dai-10", "DAI10", "Drug Attitude Inventory (DAI-10)")
    q["item"] = [
        {"linkId": f"dai-{i}", "text": text, "type": "boolean", "required": True}
        for i, text in enumerate(DAI_TEXT, start=1)
    ]
    return q


def _cbtsq() -> dict[str, Any]:
    """The CBTSQ site form: 16 frequency items (local code system, `ordinalValue` 1-5)."""
    q = _site_header("cbtsq", "CBTSQ", "Cognitive-Behavioral Therapy Skills Questionnaire (CBTSQ)")
    options = [
        _scored_option(CBTSQ_FREQUENCY_SYSTEM, str(v), d, v, ORDINAL_VALUE) for v, d in CBTSQ_FREQUENCY
    ]
    q["item"] = [
        {
            "linkId": f"cbtsq-{i}",
            "code": [_coding("http://alliance-qi.example.org/CodeSystem/cbtsq-items", f"cbtsq-{i}", text)],
            "text": text,
            "type": "choice",
            "required": True,
            "answerOption": options,
        }
        for i, text in enumerate(CBTSQ_TEXT, start=1)
    ]
    return q


def build_forms(quirks: bool = True) -> dict[str, dict[str, Any]]:
    """All Questionnaires by id. `quirks=False` repairs the NLM form's numeric optionPrefix."""
    forms = [
        _wai_form(
            "wai-sr", "wai", "WAISR", "Working Alliance Inventory - Short Revised (client)", WAI_CLIENT_TEXT
        ),
        _wai_form(
            "wai-sr-t",
            "wait",
            "WAISRT",
            "Working Alliance Inventory - Short Revised (therapist)",
            WAI_THERAPIST_TEXT,
        ),
        _integer_form("srs", "SRS", "Session Rating Scale (SRS)", SRS_ITEMS),
        _integer_form("ors", "ORS", "Outcome Rating Scale (ORS)", ORS_ITEMS),
        _phq9_site(),
        _phq9_lhc(quirks),
        _phq9_sdc(),
        _phq9_vendor(),
        _gad7("gad-7", ORDINAL_VALUE),
        _gad7_vendor(),
        _gad7("gad-7-legacy", ORDINAL_VALUE_LEGACY),
        _mars(),
        _dai10(),
        _cbtsq(),
    ]
    return {q["id"]: q for q in forms}


FORMS: dict[str, dict[str, Any]] = build_forms()

# Forms whose canonical is not under the site base: responses cite the foreign url as published.
_FOREIGN = {"phq-9-sdc": SDC_PHQ9_URL, "phq-9-vendor": VENDOR_PHQ9_URL, "gad-7-vendor": VENDOR_GAD7_URL}


def canonical_for(form_id: str) -> str:
    """What a response's `questionnaire` element holds for this form.

    Site forms: `url|version`. Foreign forms: their bare url, as their real responses do. The NLM
    form has no url at all, so its responses reference the server copy, `Questionnaire/phq-9-lhc`.
    """
    if form_id not in FORMS:
        raise KeyError(f"unknown form {form_id!r}")
    if form_id == "phq-9-lhc":
        return "Questionnaire/phq-9-lhc"
    if form_id in _FOREIGN:
        return _FOREIGN[form_id]
    return f"{SITE_BASE}{form_id}|{SITE_VERSION}"


LAYOUTS: dict[str, FormLayout] = {
    "wai-sr": FormLayout("wai-sr", "wai-sr", tuple(f"wai-{i}" for i in range(1, 13)), "wai"),
    "wai-sr-t": FormLayout("wai-sr-t", "wai-sr-t", tuple(f"wait-{i}" for i in range(1, 13)), "wai"),
    "srs": FormLayout("srs", "srs", tuple(k for k, _ in SRS_ITEMS), "integer"),
    "ors": FormLayout("ors", "ors", tuple(k for k, _ in ORS_ITEMS), "integer"),
    "phq-9": FormLayout(
        "phq-9",
        "phq-9",
        tuple(f"phq9-{i}" for i in range(1, 10)),
        "loinc",
        total_link_id="phq9-total",
        total_kind="integer",
        difficulty_link_id="phq9-difficulty",
    ),
    "phq-9-lhc": FormLayout(
        "phq-9-lhc",
        "phq-9",
        tuple(f"/{c}" for c, _ in PHQ9_ITEMS),
        "loinc-nosystem",
        total_link_id=f"/{PHQ9_TOTAL[0]}",
        total_kind="decimal",
        difficulty_link_id=f"/{PHQ9_DIFFICULTY[0]}",
        echo_text=True,
        texts=tuple(t for _, t in PHQ9_ITEMS),
        total_first=True,
    ),
    "phq-9-sdc": FormLayout(
        "phq-9-sdc",
        "phq-9",
        tuple(f"H1/T1/Q{i}" for i in range(1, 10)),
        "sdc",
        item_group=("H1", "H1/T1"),
        total_link_id="H1/TS",
        total_kind="quantity",
        total_group=("H1",),
        echo_text=True,
        texts=tuple(t + "?" for _, t in PHQ9_ITEMS),
    ),
    "phq-9-vendor": FormLayout(
        "phq-9-vendor",
        "phq-9",
        tuple(VENDOR_PHQ9_LINK_IDS),
        "loinc",
        difficulty_link_id=VENDOR_PHQ9_DIFFICULTY,
    ),
    "gad-7": FormLayout(
        "gad-7",
        "gad-7",
        tuple(f"gad7-{i}" for i in range(1, 8)),
        "loinc",
        total_link_id="gad7-total",
        total_kind="integer",
    ),
    "gad-7-vendor": FormLayout("gad-7-vendor", "gad-7", tuple(VENDOR_GAD7_LINK_IDS), "loinc"),
    "gad-7-legacy": FormLayout(
        "gad-7-legacy",
        "gad-7",
        tuple(f"g7q{i}" for i in range(1, 8)),
        "loinc",
        total_link_id="g7total",
        total_kind="integer",
    ),
    "mars": FormLayout("mars", "mars", tuple(f"mars-{i}" for i in range(1, 11)), "yes-no"),
    "dai-10": FormLayout("dai-10", "dai-10", tuple(f"dai-{i}" for i in range(1, 11)), "boolean"),
    "cbtsq": FormLayout("cbtsq", "cbtsq", tuple(f"cbtsq-{i}" for i in range(1, 17)), "cbtsq"),
}

_GROUP_TEXT = {"H1": "PHQ-9", "H1/T1": FORMS["phq-9-sdc"]["item"][0]["item"][0]["text"]}


def answer_value(layout: FormLayout, value: int | bool) -> dict[str, Any]:
    """The `answer` entry for one instrument value (score 0-3, 1-5, 0-10, or a boolean)."""
    kind = layout.answer_kind
    if kind == "wai":
        score = int(value)
        return {"valueCoding": _coding(WAI_FREQUENCY_SYSTEM, str(score), WAI_FREQUENCY[score - 1][1])}
    if kind == "integer":
        return {"valueInteger": int(value)}
    if kind in ("loinc", "loinc-nosystem"):
        code, display = PHQ_ANSWERS[int(value)]
        return {"valueCoding": _coding(LOINC if kind == "loinc" else None, code, display)}
    if kind == "sdc":
        code, display = SDC_ANSWERS[int(value)]
        return {"valueCoding": _coding(None, code, display)}
    if kind == "yes-no":
        code, display = YES_NO[bool(value)]
        return {"valueCoding": _coding(YES_NO_SYSTEM, code, display)}
    if kind == "boolean":
        return {"valueBoolean": bool(value)}
    if kind == "cbtsq":
        score = int(value)
        return {"valueCoding": _coding(CBTSQ_FREQUENCY_SYSTEM, str(score), CBTSQ_FREQUENCY[score - 1][1])}
    raise ValueError(f"unknown answer kind {kind!r}")


def _total_answer(kind: str, total: int) -> dict[str, Any]:
    if kind == "integer":
        return {"valueInteger": total}
    if kind == "decimal":
        return {"valueDecimal": total}
    if kind == "quantity":
        return {"valueQuantity": {"value": total, "unit": "{score}"}}
    raise ValueError(f"unknown total kind {kind!r}")


def _place(tree: list[dict[str, Any]], groups: tuple[str, ...], item: dict[str, Any]) -> None:
    """Append `item` under the nested groups `groups`, creating them in order as needed."""
    level = tree
    for link_id in groups:
        found = next((g for g in level if g.get("linkId") == link_id and "item" in g), None)
        if found is None:
            found = {"linkId": link_id, "text": _GROUP_TEXT.get(link_id, link_id), "item": []}
            level.append(found)
        level = found["item"]
    level.append(item)


def response_items(
    form_id: str,
    values: list[int | bool | None],
    total: int | None = None,
    difficulty: int | None = None,
) -> list[dict[str, Any]]:
    """Build a response's `item` tree from instrument-ordered values (None = item not answered).

    `total` is written into the form's total item when the form has one (None omits it);
    `difficulty` (0-3) answers the PHQ-9 difficulty item when the form has one.
    """
    layout = LAYOUTS[form_id]
    if len(values) != len(layout.link_ids):
        raise ValueError(f"{form_id}: expected {len(layout.link_ids)} values, got {len(values)}")
    tree: list[dict[str, Any]] = []
    for i, (link_id, value) in enumerate(zip(layout.link_ids, values, strict=True)):
        if value is None:
            continue
        item: dict[str, Any] = {"linkId": link_id}
        if layout.echo_text:
            item["text"] = layout.texts[i]
        item["answer"] = [answer_value(layout, value)]
        _place(tree, layout.item_group, item)
    extra: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    if difficulty is not None and layout.difficulty_link_id:
        code, display = DIFFICULTY_ANSWERS[difficulty]
        system = None if layout.answer_kind in ("loinc-nosystem", "sdc") else LOINC
        answer = {"valueCoding": _coding(system, code, display)}
        extra.append(((), {"linkId": layout.difficulty_link_id, "answer": [answer]}))
    if total is not None and layout.total_link_id and layout.total_kind:
        total_item = {"linkId": layout.total_link_id, "answer": [_total_answer(layout.total_kind, total)]}
        extra.insert(0 if layout.total_first else len(extra), (layout.total_group, total_item))
    for groups, item in extra:
        _place(tree, groups, item)
    return tree


def clean_copy(form_id: str, quirks: bool) -> dict[str, Any]:
    """A deep copy of a form, with or without the real-world quirks (see `build_forms`)."""
    return copy.deepcopy(FORMS[form_id] if quirks else build_forms(quirks=False)[form_id])
