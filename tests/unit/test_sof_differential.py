"""Differential check: the ViewDefinition compiler on DuckDB against sqlonfhir, an independent implementation.

The same ViewDefinitions run through both on the demo clinic's resources (with its planted messy
records) and on hypothesis-generated Patient- and Observation-like resources; the rows must be the
same multiset. Rows are compared as name -> value maps with numbers as floats, because sqlonfhir
returns Python dicts (its column order differs, see NOT_COMPARED) and Decimal numbers.

Only features both implement are compared. FEATURES lists them and every one is exercised by at
least one view below (a test checks that); NOT_COMPARED lists what sqlonfhir 0.0.2 lacks.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo.generator import GeneratorConfig, generate
from fhir_mappings.views import build_view
from tests.sof_conformance import _row_key, sqlonfhir_executor

FEATURES = {
    "column",
    "column types (id, string, code, boolean, integer, decimal, date, dateTime)",
    "collection columns",
    "nested select",
    "forEach",
    "nested forEach",
    "forEachOrNull",
    "unionAll",
    "view where",
    "constant (string, integer, boolean)",
    "member paths through arrays",
    "indexer [n]",
    "first()",
    "exists() / exists(criteria)",
    "empty()",
    "not()",
    "where(criteria)",
    "join()",
    "ofType() on choice elements",
    "extension(url)",
    "getResourceKey()",
    "getReferenceKey() with and without type",
    "= and != on strings, numbers and booleans",
    "< > <= >= on numbers and strings",
    "and / or / implies",
    "+ - * / on numbers",
    "$this",
}
NOT_COMPARED = {
    "repeat": "sqlonfhir 0.0.2 does not implement it",
    "%rowIndex": "sqlonfhir 0.0.2 does not implement it",
    "lowBoundary() / highBoundary()": "sqlonfhir 0.0.2 does not implement them",
    "column order": "sqlonfhir orders a node's columns after its nested selects; rows are compared as maps",
    "constants containing quotes": "sqlonfhir splices constants into the path text",
    "choice elements (value[x]) below a forEach": (
        "sqlonfhir (fhirpathpy) loses the element type inside forEach and returns nothing; ofType() is "
        "compared at resource level"
    ),
    "errors (expectError)": "covered by the official suite; here a case where both raise counts as agreement",
    "forEachOrNull null row with collection columns or a nested forEach": (
        "sqlonfhir sets every nested column to null; the reference implementation, like this compiler, "
        "evaluates the nested expressions on an empty focus ([] for a collection column, no row below a "
        "nested forEach)"
    ),
    "getReferenceKey() on an empty collection": "sqlonfhir raises IndexError",
    "getReferenceKey() of a versioned reference (Type/id/_history/v)": (
        "sqlonfhir returns 'id/_history/v', which no resource key equals; the compiler returns the id"
    ),
    "column types as a check on data": (
        "sqlonfhir returns values as found; the compiler casts them to the column's type"
    ),
}


def view(resource: str, features: set[str], select: list[dict], **extra: Any) -> dict[str, Any]:
    """A ViewDefinition tagged (outside the definition) with the features it exercises."""
    return {"features": features, "view": {"resource": resource, "select": select, **extra}}


def col(name: str, path: str, type_: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "path": path, **extra}
    if type_:
        out["type"] = type_
    return out


VIEWS: dict[str, dict[str, Any]] = {
    "patient_basic": view(
        "Patient",
        {
            "column",
            "column types (id, string, code, boolean, integer, decimal, date, dateTime)",
            "first()",
            "join()",
        },
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("active", "active", "boolean"),
                    col("gender", "gender", "code"),
                    col("birth_date", "birthDate", "date"),
                    col("family", "name.family.first()", "string"),
                    col("given", "name.first().given.join(' ')", "string"),
                    col("second_name", "name[1].family", "string"),
                    col("key", "getResourceKey()", "id"),
                ]
            }
        ],
    ),
    "patient_names": view(
        "Patient",
        {
            "forEach",
            "collection columns",
            "nested select",
            "member paths through arrays",
            "indexer [n]",
            "$this",
        },
        [
            {"column": [col("id", "id", "id"), col("all_given", "name.given", "string", collection=True)]},
            {
                "forEach": "name",
                "column": [
                    col("use", "use", "code"),
                    col("family", "family", "string"),
                    col("given", "given", "string", collection=True),
                    col("first_given", "given[0]", "string"),
                ],
                "select": [{"forEach": "given", "column": [col("each_given", "$this", "string")]}],
            },
        ],
    ),
    "patient_telecom_or_null": view(
        "Patient",
        {"forEachOrNull"},
        [
            {"column": [col("id", "id", "id")]},
            {
                "forEachOrNull": "telecom",
                "column": [col("system", "system", "code"), col("value", "value", "string")],
            },
            {"forEachOrNull": "name", "column": [col("family", "family", "string")]},
        ],
    ),
    "patient_where_constant": view(
        "Patient",
        {
            "view where",
            "constant (string, integer, boolean)",
            "and / or / implies",
            "not()",
            "where(criteria)",
        },
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("official", "name.where(use = %use).family.first()", "string"),
                    col("named_official", "name.where(use = %use).exists()", "boolean"),
                    col("not_active", "active.not()", "boolean"),
                    col("implies", "active implies gender = 'female'", "boolean"),
                ]
            }
        ],
        constant=[
            {"name": "use", "valueString": "official"},
            {"name": "flag", "valueBoolean": True},
            {"name": "n", "valueInteger": 0},
        ],
        where=[{"path": "(active = %flag or gender = 'male') and name.count() >= %n"}],
    ),
    "patient_extensions": view(
        "Patient",
        {"extension(url)", "ofType() on choice elements", "exists() / exists(criteria)", "empty()"},
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("race", "extension('http://example.org/race').value.ofType(code).first()", "code"),
                    col(
                        "note", "extension('http://example.org/note').value.ofType(string).first()", "string"
                    ),
                    col("no_ext", "extension.empty()", "boolean"),
                    col("has_flag", "extension.exists(value.ofType(boolean) = true)", "boolean"),
                    col("deceased", "deceased.ofType(boolean)", "boolean"),
                    col("deceased_at", "deceased.ofType(dateTime)", "dateTime"),
                ]
            }
        ],
    ),
    "observation_values": view(
        "Observation",
        {
            "ofType() on choice elements",
            "getReferenceKey() with and without type",
            "< > <= >= on numbers and strings",
            "+ - * / on numbers",
            "= and != on strings, numbers and booleans",
            "column types (id, string, code, boolean, integer, decimal, date, dateTime)",
        },
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("status", "status", "code"),
                    col("patient", "subject.getReferenceKey(Patient)", "id"),
                    col("group", "subject.getReferenceKey(Group)", "id"),
                    col("any_ref", "subject.getReferenceKey()", "id"),
                    col("quantity", "value.ofType(Quantity).value", "decimal"),
                    col("unit", "value.ofType(Quantity).unit", "string"),
                    col("integer", "value.ofType(integer)", "integer"),
                    col("text", "value.ofType(string)", "string"),
                    col("flag", "value.ofType(boolean)", "boolean"),
                    col("high", "value.ofType(Quantity).value > 50", "boolean"),
                    col("low_or_eq", "value.ofType(integer) <= 3", "boolean"),
                    col("after_m", "value.ofType(string) >= 'm'", "boolean"),
                    col("doubled", "value.ofType(Quantity).value * 2 + 1", "decimal"),
                    col("ratio", "(value.ofType(Quantity).value - 1) / 4", "decimal"),
                    col("final", "status = 'final'", "boolean"),
                    col("not_final", "status != 'final'", "boolean"),
                    col("is_true", "value.ofType(boolean) = true", "boolean"),
                    col("is_five", "value.ofType(integer) = 5", "boolean"),
                ]
            }
        ],
    ),
    "observation_components": view(
        "Observation",
        {"unionAll", "nested forEach", "forEach"},
        [
            {"column": [col("id", "id", "id")]},
            {
                "unionAll": [
                    {
                        "forEach": "code.coding",
                        "column": [col("code", "code", "code"), col("kind", "'code'", "string")],
                    },
                    {
                        "forEach": "component",
                        "select": [
                            {"forEach": "code.coding", "column": [col("code", "code", "code")]},
                            {"column": [col("kind", "'component'", "string")]},
                        ],
                    },
                ]
            },
        ],
    ),
}


# -- running both -------------------------------------------------------------------------------------


def ours(resources: list[dict[str, Any]], view_def: dict[str, Any]) -> list[dict[str, Any]]:
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE src (id VARCHAR, resource JSON)")
        con.execute(
            "INSERT INTO src SELECT r ->> 'id', r FROM (SELECT unnest(CAST(? AS JSON[])) AS r)",
            [[json.dumps(r) for r in resources]],
        )
        compiled = build_view(view_def, source_relation="src")
        cur = con.execute(compiled.sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def theirs(resources: list[dict[str, Any]], view_def: dict[str, Any]) -> list[dict[str, Any]]:
    return sqlonfhir_executor(resources)(view_def)[1]


def assert_same_rows(name: str, resources: list[dict[str, Any]]) -> int:
    """Both implementations give the same row multiset for view `name`; return the row count."""
    view_def = VIEWS[name]["view"]
    relevant = [r for r in resources if r.get("resourceType") == view_def["resource"]]
    outcomes = []
    for implementation in (ours, theirs):
        try:
            outcomes.append(Counter(_row_key(r) for r in implementation(relevant, view_def)))
        except Exception as exc:  # compared below: both must fail, or neither
            outcomes.append(exc)
    a, b = outcomes
    if isinstance(a, Exception) or isinstance(b, Exception):
        assert isinstance(a, Exception) and isinstance(b, Exception), (
            f"{name}: only one raised: ours {a!r}, sqlonfhir {b!r}"
        )
        return 0
    assert a == b, (
        f"{name}: only ours {list((a - b).elements())[:3]}; only sqlonfhir {list((b - a).elements())[:3]}"
    )
    return sum(a.values())


def test_every_listed_feature_is_exercised():
    used = set().union(*(v["features"] for v in VIEWS.values()))
    assert used == FEATURES
    assert not set(NOT_COMPARED) & FEATURES


# -- the demo clinic ----------------------------------------------------------------------------------

DEMO_VIEWS = {
    "encounters": view(
        "Encounter",
        {"forEach", "getReferenceKey() with and without type", "column"},
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("status", "status", "code"),
                    col("patient", "subject.getReferenceKey(Patient)", "id"),
                    col("episode", "episodeOfCare.first().getReferenceKey(EpisodeOfCare)", "id"),
                    col("start", "period.start", "dateTime"),
                    col("class", "class.code", "code"),
                ]
            },
            {"forEach": "participant", "column": [col("practitioner", "individual.getReferenceKey()", "id")]},
        ],
    ),
    "appointments": view(
        "Appointment",
        {"unionAll", "where(criteria)"},
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("status", "status", "code"),
                    col("start", "start", "instant"),
                ]
            },
            {
                "unionAll": [
                    {
                        "forEach": "participant.where(required = 'required')",
                        "column": [col("who", "actor.reference", "string")],
                    },
                    {
                        "forEach": "participant.where(status != 'accepted')",
                        "column": [col("who", "actor.reference", "string")],
                    },
                ]
            },
        ],
    ),
    "dispenses": view(
        "MedicationDispense",
        {"ofType() on choice elements", "+ - * / on numbers"},
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("drug", "medication.ofType(CodeableConcept).coding.code.first()", "code"),
                    col("quantity", "quantity.value", "decimal"),
                    col("days", "daysSupply.value", "decimal"),
                    col("per_day", "quantity.value / daysSupply.value", "decimal"),
                    col("handed_over", "whenHandedOver", "dateTime"),
                ]
            }
        ],
    ),
    "answers": view(
        "QuestionnaireResponse",
        {"nested forEach", "forEachOrNull", "ofType() on choice elements", "collection columns"},
        [
            {
                "column": [
                    col("id", "id", "id"),
                    col("questionnaire", "questionnaire", "canonical"),
                    col("codes", "item.answer.value.ofType(Coding).code", "code", collection=True),
                    col("integers", "item.answer.value.ofType(integer)", "integer", collection=True),
                ]
            },
            {
                "forEach": "item",
                "column": [col("link_id", "linkId", "string"), col("answered", "answer.exists()", "boolean")],
                "select": [
                    {
                        "forEachOrNull": "answer",
                        "column": [col("first_sub_item", "item.linkId.first()", "string")],
                    }
                ],
            },
        ],
    ),
    "episodes": view(
        "EpisodeOfCare",
        {"and / or / implies", "getResourceKey()"},
        [
            {
                "column": [
                    col("id", "getResourceKey()", "id"),
                    col("patient", "patient.getReferenceKey(Patient)", "id"),
                    col("closed", "status = 'finished' and period.end.exists()", "boolean"),
                    col("start", "period.start", "date"),
                    col("end", "period.end", "date"),
                ]
            }
        ],
    ),
}
VIEWS.update(DEMO_VIEWS)


@pytest.fixture(scope="module")
def demo_resources() -> list[dict[str, Any]]:
    data = generate(GeneratorConfig(patients=12, seed=11, mess_rate=0.05))
    return list(data.latest().values())


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_demo_clinic_rows_agree(name, demo_resources):
    rows = assert_same_rows(name, demo_resources)
    if VIEWS[name]["view"]["resource"] != "Observation":  # the demo makes no Observations
        assert rows > 0, f"{name} produced no rows on the demo data: the comparison would be vacuous"


# -- generated resources ------------------------------------------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
date = st.dates().map(lambda d: d.isoformat())
names = st.fixed_dictionaries(
    {},
    optional={
        "use": st.sampled_from(["official", "usual", "maiden"]),
        "family": text,
        "given": st.lists(text, min_size=1, max_size=3),
    },
)
extension = st.one_of(
    st.fixed_dictionaries(
        {"url": st.just("http://example.org/race"), "valueCode": st.sampled_from(["a", "b"])}
    ),
    st.fixed_dictionaries({"url": st.just("http://example.org/note"), "valueString": text}),
    st.fixed_dictionaries({"url": st.just("http://example.org/flag"), "valueBoolean": st.booleans()}),
)
patients = st.fixed_dictionaries(
    {"resourceType": st.just("Patient")},
    optional={
        "active": st.booleans(),
        "gender": st.sampled_from(["male", "female", "other", "unknown"]),
        "birthDate": date,
        "name": st.lists(names, min_size=1, max_size=3),
        "telecom": st.lists(
            st.fixed_dictionaries({"system": st.sampled_from(["phone", "email"]), "value": text}),
            min_size=1,
            max_size=2,
        ),
        "extension": st.lists(extension, min_size=1, max_size=3),
        "deceasedBoolean": st.booleans(),
    },
)
coding = st.fixed_dictionaries(
    {"system": st.just("http://loinc.org"), "code": st.sampled_from(["1-1", "2-2", "3-3"])}
)
observations = st.fixed_dictionaries(
    {
        "resourceType": st.just("Observation"),
        "status": st.sampled_from(["final", "preliminary", "amended"]),
        "code": st.fixed_dictionaries({"coding": st.lists(coding, min_size=1, max_size=2)}),
        # always present: sqlonfhir's getReferenceKey() raises on an empty collection (NOT_COMPARED)
        "subject": st.sampled_from(["Patient/p1", "Group/g1", "Patient/p2"]).map(lambda r: {"reference": r}),
    },
    optional={
        "valueQuantity": st.fixed_dictionaries(
            {
                "value": st.integers(-9999, 9999).map(lambda n: n / 100),
                "unit": st.sampled_from(["kg", "mmHg"]),
            }
        ),
        "valueInteger": st.integers(-10, 10),
        "valueString": text,
        "valueBoolean": st.booleans(),
        "component": st.lists(
            st.fixed_dictionaries(
                {"code": st.fixed_dictionaries({"coding": st.lists(coding, min_size=1, max_size=2)})}
            ),
            min_size=1,
            max_size=2,
        ),
    },
).map(lambda o: {k: v for k, v in o.items() if not k.startswith("value")} | _one_value(o))


def _one_value(obs: dict[str, Any]) -> dict[str, Any]:
    """value[x] is a choice: keep at most one of the generated values."""
    values = sorted(k for k in obs if k.startswith("value"))
    return {values[0]: obs[values[0]]} if values else {}


def with_ids(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", **r} for i, r in enumerate(resources)]


# few examples of many resources each: sqlonfhir compiles every path again on each call
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(patients, max_size=20).map(with_ids))
def test_generated_patients_agree(resources):
    for name in (
        "patient_basic",
        "patient_names",
        "patient_telecom_or_null",
        "patient_where_constant",
        "patient_extensions",
    ):
        assert_same_rows(name, resources)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(observations, max_size=20).map(with_ids))
def test_generated_observations_agree(resources):
    for name in ("observation_values", "observation_components"):
        assert_same_rows(name, resources)
