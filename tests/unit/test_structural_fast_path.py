"""The validator's shape-cache fast path gives exactly the full model's outcome, for every input.

Differential tests: the same resources go through `StructuralValidator(fast_path=False)` (the R4B
model for every resource, as before) and through the default validator (full model once per shape,
then primitives only), and the outcomes must be equal: `rejected`, `reason` and the whole findings
list. The inputs are every resource version the demo generator writes with mess on (invalid
birthDates, missing Encounter.status, QR status 'done', authored 'last tuesday', items without
linkId, bad positiveInts), the real forms in tests/fixtures/fhir-examples, a matrix of edge values
for every FHIR primitive type the pipeline meets, and hypothesis mutations of valid resources. The
mutants share shapes with clean resources validated just before them, so the fast path (not only
the fallback) is what is being compared; the counters prove it.
"""

from __future__ import annotations

import copy
import json
import types
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo.generator import GeneratedData, GeneratorConfig, generate
from quality_checks.shape_cache import ShapeCache
from quality_checks.structural import StructuralValidator, ValidationOutcome

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir-examples"
MODES = ("used_elements", "strict")

# Bad and edge values for primitives: calendar errors, time-of-day limits, whitespace rules of
# code/string, 32-bit limits, wrong JSON kinds, nulls, lists and objects where a scalar belongs.
EDGE_VALUES: tuple[Any, ...] = (
    "2026-02-30",
    "2024-02-29",
    "2026-02-29",
    "2026-13",
    "2026-00-10",
    "2026",
    "0000",
    "2026-1-5",
    "24:00",
    "24:00:00",
    "23:59:60",
    "23:59:59.5",
    "2026-01-01T24:00:00Z",
    "2026-01-01T10:00:00",
    "2026-01-01T10:00Z",
    "2026-01-01T10:00:00Z",
    "2026-01-01T10:00:00.123+14:00",
    "2026-01-01T10:00:00+15:00",
    "2016-12-31T23:59:60Z",
    "last tuesday",
    " x",
    "x ",
    "a  b",
    "a b",
    "",
    " ",
    "\t",
    "\n",
    "x\u0000y",
    "é",
    "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7",
    "http://example.org/Questionnaire/x|1.0",
    "has space",
    "Patient/p1",
    "abc",
    "a" * 65,
    "a" * 300,
    "1",
    "-1",
    "+1",
    "01",
    "1.50",
    "1e3",
    "true",
    2**31,
    2**31 - 1,
    -(2**31),
    -(2**31) - 1,
    0,
    1,
    -1,
    1.5,
    1.0,
    0.0,
    -0.0,
    1e300,
    True,
    False,
    None,
    [],
    [None],
    ["x"],
    {},
    {"x": 1},
)


def _with_meta(data: GeneratedData) -> list[dict[str, Any]]:
    """Every version as a server returns it: with meta.versionId and meta.lastUpdated."""
    out = []
    for vid, res in data.iter_versions():
        r = copy.deepcopy(res)
        stamp = data.last_updated.get(f"{r['resourceType']}/{r['id']}/_history/{vid}")
        r["meta"] = {"versionId": vid, **({"lastUpdated": stamp} if stamp else {})}
        out.append(r)
    return out


def _path_taken(before: dict[str, int], after: dict[str, int]) -> str:
    """Which counter one validate() call moved: fast_path_hits, primitive_fallbacks, new_shapes, ..."""
    moved = [
        k
        for k in ("fast_path_hits", "primitive_fallbacks", "new_shapes", "uncovered")
        if after[k] > before[k]
    ]
    return moved[0] if moved else "none"


def _same(
    full: StructuralValidator | ValidationOutcome,
    fast: StructuralValidator,
    resource: Any,
    expected: str | None = None,
) -> tuple[ValidationOutcome, str]:
    """Validate with both (or compare with the full model's outcome given); assert identical outcomes
    and that the fast path left the input alone. Returns the outcome and the fast path's route."""
    before = copy.deepcopy(resource)
    if isinstance(full, StructuralValidator):
        want = full.validate(copy.deepcopy(resource), expected)
    else:
        want = full
    stats = fast.stats.as_dict()
    got = fast.validate(resource, expected)
    assert resource == before, "validation must not change the resource"
    assert got == want, f"fast path differs for {json.dumps(resource, default=str)[:400]}"
    return got, _path_taken(stats, fast.stats.as_dict())


# ---------------------------------------------------------------- the generator's data, mess on


@pytest.mark.parametrize(
    ("seed", "mode"), [(1, "used_elements"), (2, "used_elements"), (3, "used_elements"), (4, "strict")]
)
def test_generated_versions_with_mess_get_identical_outcomes(seed: int, mode: str) -> None:
    data = generate(GeneratorConfig(patients=60, seed=seed, mess_rate=0.05))
    resources = _with_meta(data)
    full, fast = StructuralValidator(mode, fast_path=False), StructuralValidator(mode)  # type: ignore[arg-type]
    model_says = [full.validate(copy.deepcopy(r), r["resourceType"]) for r in resources]
    for r, want in zip(
        resources, model_says, strict=True
    ):  # first pass in load order: shapes learnt as they come
        _same(want, fast, copy.deepcopy(r), r["resourceType"])
    # Second pass: every clean shape is known now, so each planted defect of a known shape has to be
    # caught by the fast path's primitive check (then handed to the model), not by a new shape.
    paths: dict[tuple[str, str, str], str] = {}
    outcomes: dict[tuple[str, str, str], ValidationOutcome] = {}
    for r, want in zip(resources, model_says, strict=True):
        key = (r["resourceType"], r["id"], r["meta"]["versionId"])
        outcomes[key], paths[key] = _same(want, fast, copy.deepcopy(r), r["resourceType"])

    planted = {(m["resourceType"], m["id"], m["version"]): m["detail"] for m in data.manifest["mess"]}
    kinds_seen: Counter[str] = Counter()
    for key, detail in planted.items():
        if key not in outcomes:
            continue
        if "last tuesday" in detail or "-13-45" in detail:
            assert outcomes[key].rejected, detail
            assert paths[key] == "primitive_fallbacks", (key, detail, paths[key])
            kinds_seen["bad primitive"] += 1
        elif "status 'done'" in detail:
            assert outcomes[key].rejected and "required value set" in (outcomes[key].reason or "")
            assert paths[key] == "fast_path_hits"  # the model finds nothing; the binding check rejects
            kinds_seen["binding"] += 1
        elif "lost its required linkId" in detail or "status is missing" in detail:
            assert outcomes[key].rejected
            assert paths[key] == "new_shapes"  # a shape the model never passed
            kinds_seen["missing required"] += 1
    assert (
        kinds_seen["bad primitive"] >= 2
        and kinds_seen["binding"] >= 1
        and kinds_seen["missing required"] >= 2
    )

    # The clean part goes through the fast path: every clean QuestionnaireResponse of the 2nd pass.
    clean_qrs = [k for k in outcomes if k[0] == "QuestionnaireResponse" and not outcomes[k].findings]
    assert len(clean_qrs) > 1000
    assert all(paths[k] == "fast_path_hits" for k in clean_qrs)
    stats = fast.stats
    assert stats.fast_path_hits > 0.9 * len(resources)
    assert stats.full_validations < 0.2 * len(resources)


# ---------------------------------------------------------------- real public forms


def _real_forms() -> list[dict[str, Any]]:
    forms = []
    for name in (
        "hl7-sdc-phq9-response.json",
        "hl7-sdc-phq9-questionnaire.json",
        "nlm-lhcforms-phq9-questionnaire.json",
    ):
        path = EXAMPLES / name
        if not path.exists():
            pytest.fail(f"missing real-form fixture {path}")
        d = json.loads(path.read_text())
        d.setdefault("id", "form-" + name.split("-")[0])
        forms.append(d)
    return forms


@pytest.mark.parametrize("mode", MODES)
def test_real_forms_and_their_variants_get_identical_outcomes(mode: str) -> None:
    full, fast = StructuralValidator(mode, fast_path=False), StructuralValidator(mode)  # type: ignore[arg-type]
    response, *questionnaires = _real_forms()
    for form in questionnaires:  # extensions and contained resources: always the full model
        for _ in range(2):
            _, path = _same(full, fast, copy.deepcopy(form))
            assert path == "uncovered"
    _same(full, fast, copy.deepcopy(response))
    _, path = _same(full, fast, copy.deepcopy(response))
    assert path == "fast_path_hits"
    variants: list[tuple[str, Any]] = [
        ("authored", "last tuesday"),
        ("authored", "2019-02-30T20:36:57Z"),
        ("authored", "2019-08-21T20:36:57"),
        ("status", "done"),
        ("status", "completed "),
        ("questionnaire", "has space"),
        ("id", "a" * 65),
    ]
    for key, value in variants:
        r = copy.deepcopy(response)
        r[key] = value
        _same(full, fast, r)
    r = copy.deepcopy(response)
    r["item"][0]["item"][2]["answer"][0]["valueCoding"]["code"] = "two  spaces"
    out, path = _same(full, fast, r)
    assert out.findings and path == "primitive_fallbacks"


# ---------------------------------------------------------------- every primitive type x edge values

_QR_BASE: dict[str, Any] = {
    "resourceType": "QuestionnaireResponse",
    "id": "qr-1",
    "meta": {"versionId": "1", "lastUpdated": "2026-03-01T10:00:00.000+00:00"},
    "questionnaire": "http://example.org/Questionnaire/phq-9|1.0",
    "status": "completed",
    "subject": {"reference": "Patient/p1"},
    "authored": "2026-03-01T09:00:00-05:00",
    "item": [
        {"linkId": "a", "answer": [{"valueInteger": 2}]},
        {"linkId": "b", "answer": [{"valueDecimal": 1.5}]},
        {"linkId": "c", "answer": [{"valueBoolean": True}]},
        {"linkId": "d", "answer": [{"valueDate": "2026-03-01"}]},
        {"linkId": "e", "answer": [{"valueDateTime": "2026-03-01T09:00:00Z"}]},
        {"linkId": "f", "answer": [{"valueTime": "09:30:00"}]},
        {"linkId": "g", "answer": [{"valueString": "free text"}]},
        {"linkId": "h", "answer": [{"valueUri": "http://example.org/x"}]},
        {
            "linkId": "i",
            "definition": "http://example.org/def",
            "answer": [{"valueCoding": {"code": "LA6568-5"}}],
        },
    ],
}
_OTHER_BASES: dict[str, dict[str, Any]] = {
    "Patient": {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "gender": "female",
        "birthDate": "1980-05-17",
        "telecom": [{"system": "phone", "value": "555-0100", "rank": 1}],
    },
    "Appointment": {
        "resourceType": "Appointment",
        "id": "ap1",
        "status": "booked",
        "start": "2026-03-01T09:00:00Z",
        "minutesDuration": 50,
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
    },
    "MedicationRequest": {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "312940"}]
        },
        "dispenseRequest": {
            "numberOfRepeatsAllowed": 3,
            "quantity": {"value": 30, "unit": "tablet"},
            "expectedSupplyDuration": {"value": 30, "unit": "days"},
        },
    },
}
# (resource type, path to a primitive) covering id, code, string, uri, canonical, instant,
# dateTime, date, time, decimal, integer, positiveInt, unsignedInt and boolean.
_PRIMITIVE_PATHS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("QuestionnaireResponse", ("id",)),
    ("QuestionnaireResponse", ("meta", "versionId")),
    ("QuestionnaireResponse", ("meta", "lastUpdated")),
    ("QuestionnaireResponse", ("questionnaire",)),
    ("QuestionnaireResponse", ("status",)),
    ("QuestionnaireResponse", ("authored",)),
    ("QuestionnaireResponse", ("subject", "reference")),
    ("QuestionnaireResponse", ("item", 0, "linkId")),
    ("QuestionnaireResponse", ("item", 0, "answer", 0, "valueInteger")),
    ("QuestionnaireResponse", ("item", 1, "answer", 0, "valueDecimal")),
    ("QuestionnaireResponse", ("item", 2, "answer", 0, "valueBoolean")),
    ("QuestionnaireResponse", ("item", 3, "answer", 0, "valueDate")),
    ("QuestionnaireResponse", ("item", 4, "answer", 0, "valueDateTime")),
    ("QuestionnaireResponse", ("item", 5, "answer", 0, "valueTime")),
    ("QuestionnaireResponse", ("item", 6, "answer", 0, "valueString")),
    ("QuestionnaireResponse", ("item", 7, "answer", 0, "valueUri")),
    ("QuestionnaireResponse", ("item", 8, "definition")),
    ("QuestionnaireResponse", ("item", 8, "answer", 0, "valueCoding", "code")),
    ("Patient", ("birthDate",)),
    ("Patient", ("active",)),
    ("Patient", ("gender",)),
    ("Patient", ("telecom", 0, "rank")),
    ("Appointment", ("start",)),
    ("Appointment", ("minutesDuration",)),
    ("MedicationRequest", ("dispenseRequest", "numberOfRepeatsAllowed")),
    ("MedicationRequest", ("dispenseRequest", "quantity", "value")),
)


def _base(rtype: str) -> dict[str, Any]:
    return copy.deepcopy(_QR_BASE if rtype == "QuestionnaireResponse" else _OTHER_BASES[rtype])


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(node, path[:-1])[path[-1]] = value


@pytest.mark.parametrize("mode", MODES)
def test_every_primitive_type_with_edge_values_gets_identical_outcomes(mode: str) -> None:
    full, fast = StructuralValidator(mode, fast_path=False), StructuralValidator(mode)  # type: ignore[arg-type]
    paths_taken: Counter[str] = Counter()
    verdicts: Counter[bool] = Counter()
    for rtype, path in _PRIMITIVE_PATHS:
        base = _base(rtype)
        out, _ = _same(full, fast, copy.deepcopy(base))
        assert not out.findings, f"{rtype} base must be clean"
        for value in EDGE_VALUES:
            r = copy.deepcopy(base)
            _set(r, path, value)
            out, taken = _same(full, fast, r)
            verdicts[bool(out.findings)] += 1
            # Same JSON kind as the clean base, so the same shape: the fast path decides or falls back
            # (a resource id is checked by the validator itself before any model or shape).
            if type(value) is type(_get(base, path)) and path != ("id",):
                assert taken in ("fast_path_hits", "primitive_fallbacks"), (rtype, path, value, taken)
            paths_taken[taken] += 1
    # Both verdicts occur, and the fast path decided a good share of cases on its own.
    assert verdicts[True] > 100 and verdicts[False] > 50
    assert paths_taken["fast_path_hits"] > 50 and paths_taken["primitive_fallbacks"] > 100


# ---------------------------------------------------------------- hypothesis mutations


@cache
def _fast(mode: str) -> StructuralValidator:
    """One fast validator per mode for the whole property run: shapes accumulate as in a landing run."""
    return StructuralValidator(mode)  # type: ignore[arg-type]


@cache
def _full(mode: str) -> StructuralValidator:
    return StructuralValidator(mode, fast_path=False)  # type: ignore[arg-type]


@cache
def _hypothesis_bases() -> tuple[dict[str, Any], ...]:
    """Valid resources to mutate: one of every covered generated type, plus the hand-made bases."""
    data = generate(GeneratorConfig(patients=12, seed=5, mess_rate=0.0))
    by_type: dict[str, dict[str, Any]] = {}
    for r in _with_meta(data):
        if r["resourceType"] != "Questionnaire":
            by_type.setdefault(r["resourceType"], r)
            if r["resourceType"] == "QuestionnaireResponse" and r["id"].endswith("phq9"):
                by_type["QR-phq9"] = r
    bases = [*by_type.values(), _base("QuestionnaireResponse"), *(_base(t) for t in _OTHER_BASES)]
    return tuple(bases)


def _all_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) in a JSON tree, containers included, root excluded."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(((*prefix, k), v))
        out.extend(_all_paths(v, (*prefix, k)))
    return out


CHOICE_TYPES = ("valueInteger", "valueString", "valueCoding", "valueBoolean", "valueDecimal", "valueDate")
EXTRA_KEYS = ("foo", "_status", "resourceType", "class_fhir", "fhir_comments", "extension", "value")


@st.composite
def mutants(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], str, bool]:
    """(base, mutant, kind, same_shape): one mutation of one valid base resource."""
    base = draw(st.sampled_from(_hypothesis_bases()))
    r = copy.deepcopy(base)
    paths = [p for p, _ in _all_paths(r) if p[0] != "resourceType"]
    scalars = [p for p in paths if not isinstance(_get(r, p), dict | list)]
    dicts = [(), *(p for p in paths if isinstance(_get(r, p), dict))]
    lists = [p for p in paths if isinstance(_get(r, p), list)]
    kind = draw(
        st.sampled_from(
            (
                "primitive",
                "anything",
                "null_in_list",
                "drop_key",
                "unknown_key",
                "swap_choice",
                "second_choice",
            )
        )
    )
    same_shape = False
    if kind == "primitive":
        path = draw(st.sampled_from(scalars))
        old = _get(r, path)
        value = draw(
            st.sampled_from(EDGE_VALUES) | st.text(max_size=12) | st.integers() | st.floats(allow_nan=False)
        )
        _set(r, path, value)
        same_shape = type(value) is type(old) and path != ("id",)  # the id is pre-checked, no shape
    elif kind == "anything":
        path = draw(st.sampled_from(paths))
        _set(r, path, draw(st.sampled_from(EDGE_VALUES)))
    elif kind == "null_in_list" and lists:
        path = draw(st.sampled_from(lists))
        target = _get(r, path)
        target.insert(draw(st.integers(0, len(target))), None)
    elif kind == "drop_key":
        path = draw(st.sampled_from(dicts))
        target = _get(r, path)
        if target:
            del target[draw(st.sampled_from(sorted(target)))]
    elif kind == "unknown_key":
        path = draw(st.sampled_from(dicts))
        _get(r, path)[draw(st.sampled_from(EXTRA_KEYS))] = draw(st.sampled_from(EDGE_VALUES))
    else:  # swap a value[x] for another type, or add a second one beside it
        choices = [
            p for p in paths if isinstance(p[-1], str) and p[-1].startswith("value") and len(p[-1]) > 5
        ]
        if choices:
            path = draw(st.sampled_from(choices))
            parent, old_key = _get(r, path[:-1]), path[-1]
            new_key = draw(st.sampled_from([c for c in CHOICE_TYPES if c != old_key]))
            value = draw(st.sampled_from((parent[old_key], 3, "x", True, {"code": "a"}, 2.5)))
            if kind == "swap_choice":
                del parent[old_key]
            parent[new_key] = value
    return base, r, kind, same_shape


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutants())
def test_mutations_of_valid_resources_get_identical_outcomes(
    mode: str, case: tuple[dict[str, Any], dict[str, Any], str, bool]
) -> None:
    base, mutant, _kind, same_shape = case
    full, fast = _full(mode), _fast(mode)
    out, _ = _same(full, fast, copy.deepcopy(base))  # the base's shape is clean and known from here
    assert not out.findings
    _, taken = _same(full, fast, mutant)
    if same_shape:  # a primitive changed within its JSON kind: the shape cache decides or falls back
        assert taken in ("fast_path_hits", "primitive_fallbacks")


# ---------------------------------------------------------------- what the fast path never takes


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"_status": {"extension": [{"url": "http://x", "valueString": "y"}]}}, "primitive extension"),
        ({"extension": [{"url": "http://x", "valueString": "y"}]}, "extension"),
        ({"modifierExtension": [{"url": "http://x", "valueString": "y"}]}, "modifierExtension"),
        ({"contained": [{"resourceType": "Patient", "id": "c"}]}, "contained"),
        ({"fhir_comments": "note"}, "fhir_comments"),
        (
            {"subject": '{"reference": "Patient/p1"}'},
            "JSON text where an element belongs (the model parses it)",
        ),
        ({"subject": {"reference": "Patient/p1", "resourceType": "Reference"}}, "nested resourceType"),
        ({"item": ({"linkId": "a"},)}, "a tuple, not a JSON list"),
        ({"status__ext": {"extension": [{"url": "http://x", "valueString": "y"}]}}, "python field name"),
    ],
)
def test_uncovered_inputs_always_take_the_full_model(extra: dict[str, Any], why: str) -> None:
    full, fast = StructuralValidator(fast_path=False), StructuralValidator()
    base = {"resourceType": "QuestionnaireResponse", "id": "a", "status": "completed"}
    _same(full, fast, dict(base))
    for _ in range(2):  # the second time too: such shapes are never recorded
        _, taken = _same(full, fast, {**base, **extra})
        assert taken == "uncovered", why
    assert fast.stats.shapes_cached == 1  # only the plain base's shape


def test_encounter_class_under_its_python_name_is_left_to_the_model() -> None:
    full, fast = StructuralValidator(fast_path=False), StructuralValidator()
    enc = {"resourceType": "Encounter", "id": "e", "status": "finished", "class": {"code": "AMB"}}
    _same(full, fast, dict(enc))
    renamed = {"resourceType": "Encounter", "id": "e", "status": "finished", "class_fhir": {"code": "AMB"}}
    out, taken = _same(full, fast, renamed)
    assert taken == "uncovered"
    assert not out.rejected  # pydantic's populate_by_name accepts the field name: the model's verdict stands


# ---------------------------------------------------------------- the cache itself


def test_shape_cache_is_bounded_and_keyed_on_type_and_mode() -> None:
    fast = StructuralValidator(max_shapes=3)
    shapes = [
        {"resourceType": "Patient", "id": "p"},
        {"resourceType": "Patient", "id": "p", "active": True},
        {"resourceType": "Patient", "id": "p", "gender": "male"},
        {"resourceType": "Patient", "id": "p", "birthDate": "1990"},
        {"resourceType": "Practitioner", "id": "p"},  # same keys as the first, another type
    ]
    for r in shapes:
        fast.validate(r)
    assert fast.stats.shapes_cached == 3
    assert fast.stats.shape_evictions == 2
    assert fast.stats.new_shapes == 5
    fast.validate({"resourceType": "Practitioner", "id": "q"})  # most recent: still cached
    assert fast.stats.fast_path_hits == 1
    fast.validate({"resourceType": "Patient", "id": "q"})  # evicted: the full model again
    assert fast.stats.fast_path_hits == 1 and fast.stats.new_shapes == 6
    strict = StructuralValidator(mode="strict")
    strict.validate({"resourceType": "Patient", "id": "p"})
    cache_keys = list(strict._shapes._clean) if strict._shapes else []  # internals: the key itself
    assert cache_keys and cache_keys[0][:2] == ("Patient", "strict")


def test_list_length_and_order_do_not_make_new_shapes() -> None:
    fast = StructuralValidator()
    one = {
        "resourceType": "QuestionnaireResponse",
        "id": "a",
        "status": "completed",
        "item": [
            {"linkId": "1", "answer": [{"valueInteger": 1}]},
            {"linkId": "2", "answer": [{"valueString": "x"}]},
        ],
    }
    fast.validate(one)
    more = copy.deepcopy(one)
    more["item"] = [*reversed(more["item"]), *more["item"], *more["item"]]
    out = fast.validate(more)
    assert not out.rejected
    assert fast.stats.fast_path_hits == 1 and fast.stats.full_validations == 1


def test_fast_path_off_always_runs_the_model() -> None:
    full = StructuralValidator(fast_path=False)
    for _ in range(3):
        full.validate({"resourceType": "Patient", "id": "p"})
    assert full.stats.full_validations == 3 and full.stats.fast_path_hits == 0
    assert full.stats.shapes_cached == 0


def test_describe_maps_primitive_paths_to_fhir_types() -> None:
    cache_ = ShapeCache()
    qr = _base("QuestionnaireResponse")
    types = cache_.describe(get_fhir_model_class("QuestionnaireResponse"), qr)
    assert types["meta.lastUpdated"] == "instant"
    assert types["meta.versionId"] == "id"
    assert types["questionnaire"] == "canonical"
    assert types["status"] == "code"
    assert types["authored"] == "dateTime"
    assert types["item[0].linkId"] == "string"
    assert types["item[0].answer[0].valueInteger"] == "integer"
    assert types["item[1].answer[0].valueDecimal"] == "decimal"
    assert types["item[5].answer[0].valueTime"] == "time"
    assert types["item[8].answer[0].valueCoding.code"] == "code"
    patient = cache_.describe(get_fhir_model_class("Patient"), _base("Patient"))
    assert patient["birthDate"] == "date" and patient["telecom[0].rank"] == "positiveInt"


def test_primitive_verdict_cache_keeps_python_types_apart() -> None:
    """True == 1 and hash alike, but only one of them is a valid integer; the cache must not mix them."""
    full, fast = StructuralValidator(fast_path=False), StructuralValidator()
    base = _base("QuestionnaireResponse")
    _same(full, fast, copy.deepcopy(base))
    for value in (1, True, 1, True, 0, False):
        r = copy.deepcopy(base)
        r["item"][0]["answer"][0]["valueInteger"] = value
        _same(full, fast, r)
        s = copy.deepcopy(base)
        s["item"][6]["answer"][0]["valueString"] = value
        _same(full, fast, s)


# ---------------------------------------------------------------- the primitive validators are the model's


def _comparable(schema: Any) -> Any:
    """A core schema with what legitimately differs between two builds of the same type removed:
    serializers and metadata, and function identity (a closure made twice is two objects: compare
    its code and captured values instead)."""
    if isinstance(schema, dict):
        return {k: _comparable(v) for k, v in schema.items() if k not in ("serialization", "metadata", "ref")}
    if isinstance(schema, list):
        return [_comparable(v) for v in schema]
    if isinstance(schema, types.FunctionType):
        cells = tuple(_comparable(c.cell_contents) for c in schema.__closure__ or ())
        return ("function", schema.__code__, cells)
    return schema


def _model_field_schemas(model: type) -> dict[str, Any]:
    """The compiled core schema of every field of `model`, as the model itself validates them."""

    def find(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") == "model" and node.get("cls") is model:
                return node["schema"]
            for v in node.values():
                found = find(v)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for v in node:
                found = find(v)
                if found is not None:
                    return found
        return None

    fields = find(model.__pydantic_core_schema__)  # type: ignore[attr-defined]
    while fields.get("type") != "model-fields":
        fields = fields["schema"]
    out = {}
    for name, field in fields["fields"].items():
        schema = field["schema"]
        out[field.get("validation_alias") or name] = (
            schema["schema"] if schema["type"] == "default" else schema
        )
    return out


def test_fast_path_validators_compile_to_the_models_own_field_schemas() -> None:
    """By construction, not only by sampling: for every primitive field of every element class the
    pipeline's resource types reach, the fast path's validator has the model's compiled schema."""
    cache_ = ShapeCache()
    todo = [
        get_fhir_model_class(t)
        for t in (
            *_OTHER_BASES,
            "QuestionnaireResponse",
            "Encounter",
            "EpisodeOfCare",
            "MedicationDispense",
            "Practitioner",
            "PractitionerRole",
            "Organization",
        )
    ]
    seen: set[type] = set()
    compared = 0
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        compiled = _model_field_schemas(model)
        for key, adapter in cache_.primitive_validators(model).items():
            assert _comparable(adapter.core_schema) == _comparable(compiled[key]), (model.__name__, key)
            compared += 1
        todo.extend(spec.child for spec in cache_._table(model).values() if spec.child is not None)
    assert len(seen) >= 50 and compared >= 200
