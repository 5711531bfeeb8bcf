"""FHIR reference parsing is written twice (SQL macros for set-based code, references.py for Python):
one table of cases runs through both, so the two cannot drift apart."""

from __future__ import annotations

import re

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings.recognition import literal_questionnaire_id
from pipelines.resources.fhir.references import REFERENCE_PATTERN, contained_id, parse_reference
from pipelines.sqlfiles import MACROS_FILE, install_shared_macros

# (reference, type, Type/id key, contained id): what both parsers must say.
CASES: list[tuple[str | None, str | None, str | None, str | None]] = [
    ("Patient/p1", "Patient", "Patient/p1", None),
    ("Patient/p1/_history/3", "Patient", "Patient/p1", None),
    ("https://ehr.example.org/fhir/Patient/p1", "Patient", "Patient/p1", None),
    ("https://ehr.example.org/fhir/Patient/p1/_history/2", "Patient", "Patient/p1", None),
    ("http://localhost:8080/R4/Encounter/e-1.a", "Encounter", "Encounter/e-1.a", None),
    ("PractitionerRole/t-1", "PractitionerRole", "PractitionerRole/t-1", None),
    ("RelatedPerson/rp1", "RelatedPerson", "RelatedPerson/rp1", None),
    ("Questionnaire/phq-9", "Questionnaire", "Questionnaire/phq-9", None),
    ("Patient/" + "a" * 64, "Patient", "Patient/" + "a" * 64, None),
    ("Patient/p1\n", None, None, None),  # a trailing newline is not part of an id (Python `$` vs RE2)
    ("#contained-1", None, None, "contained-1"),
    ("#", None, None, None),
    ("urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7", None, None, None),
    ("urn:oid:1.2.3", None, None, None),
    ("patient/p1", None, None, None),  # the type must start with a capital
    ("Patient/p_1", None, None, None),  # '_' is not in the FHIR id charset
    ("Patient/" + "a" * 65, None, None, None),  # ids are at most 64 characters
    ("Patient/", None, None, None),
    ("Patient/p1/", None, None, None),
    ("Patient/p1/_history/", None, None, None),
    ("Patient//p1", None, None, None),
    ("Questionnaire/q1|2.0", None, None, None),  # a canonical's version is not part of a reference
    ("P/p1", None, None, None),  # a type is at least two letters
    ("just text", None, None, None),
    ("", None, None, None),
    (None, None, None, None),
]


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    install_shared_macros(connection)
    return connection


def _sql(con: duckdb.DuckDBPyConnection, query: str, **values: str | None) -> object:
    """The one value a constant query returns for bound values."""
    return con.execute(query, values).fetchall()[0][0]


@pytest.mark.parametrize(("reference", "rtype", "key", "contained"), CASES)
def test_sql_macros_and_python_parse_references_alike(con, reference, rtype, key, contained):
    parsed = parse_reference(reference)
    assert (parsed.type if parsed else None, parsed.key if parsed else None) == (rtype, key)
    assert contained_id(reference) == contained
    assert _sql(con, "SELECT ref_type($r)", r=reference) == rtype
    assert _sql(con, "SELECT ref_key($r)", r=reference) == key
    assert _sql(con, "SELECT ref_contained($r)", r=reference) == contained
    expected_id = key.split("/", 1)[1] if key else None
    assert _sql(con, "SELECT ref_id($r, $t)", r=reference, t=rtype or "Patient") == expected_id
    assert (parsed.id if parsed else None) == expected_id


@pytest.mark.parametrize(("reference", "rtype", "key", "contained"), [c for c in CASES if c[1]])
def test_ref_id_is_null_for_another_type(con, reference, rtype, key, contained):
    other = "Observation" if rtype != "Observation" else "Patient"
    assert _sql(con, "SELECT ref_id($r, $t)", r=reference, t=other) is None


@pytest.mark.parametrize(("reference", "rtype", "key", "contained"), CASES)
def test_coalesce_ref_key_keeps_non_literal_references_as_sent(con, reference, rtype, key, contained):
    # What scoring writes as patient_ref / encounter_ref / practitioner_ref.
    assert _sql(con, "SELECT coalesce(ref_key($r), $r)", r=reference) == (key or reference)


def test_python_pattern_is_the_sql_macros_pattern(con):
    assert _sql(con, "SELECT fhir_reference_pattern()") == REFERENCE_PATTERN
    # And the file's literal says so to a reader (DuckDB string literals keep backslashes as written).
    literal = re.search(r"fhir_reference_pattern\(\) AS\s+'([^']*)'", MACROS_FILE.read_text())
    assert literal is not None
    assert literal.group(1) == REFERENCE_PATTERN


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Questionnaire/phq-9", "phq-9"),
        ("https://ehr.example.org/fhir/Questionnaire/phq-9", "phq-9"),
        ("https://ehr.example.org/fhir/Questionnaire/phq-9/_history/4", "phq-9"),
        ("http://loinc.org/q/44249-1", None),  # a canonical url, not a literal reference
        ("Patient/phq-9", None),
        ("Questionnaire/", None),
    ],
)
def test_recognition_reads_literal_questionnaire_references_with_the_shared_parser(url, expected):
    assert literal_questionnaire_id(url) == expected


# What scoring extracted before the shared macros existed: 'Type/id' by a looser regex.
FORMER_SCORING_REF = r"([A-Za-z]+/[^/]+?)(?:/_history/[^/]+)?$"
_FHIR_TYPES = st.sampled_from(["Patient", "Encounter", "Practitioner", "PractitionerRole", "RelatedPerson"])
_FHIR_IDS = st.text(alphabet="abcXYZ019-.", min_size=1, max_size=64)
_BASES = st.sampled_from(["", "https://ehr.example.org/fhir/", "http://localhost:8080/R4/"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_BASES, _FHIR_TYPES, _FHIR_IDS, st.one_of(st.none(), _FHIR_IDS)), min_size=1, max_size=20
    )
)
def test_ref_key_gives_what_scorings_former_regex_gave_for_valid_references(parts):
    con = duckdb.connect()
    install_shared_macros(con)
    references = [
        f"{base}{rtype}/{rid}" + (f"/_history/{vid}" if vid else "") for base, rtype, rid, vid in parts
    ]
    got = con.execute(
        """SELECT list(coalesce(ref_key(r), r) ORDER BY i),
                  list(coalesce(nullif(regexp_extract(r, $former, 1), ''), r) ORDER BY i)
           FROM unnest($refs) WITH ORDINALITY AS t(r, i)""",
        {"refs": references, "former": FORMER_SCORING_REF},
    ).fetchall()[0]
    assert got[0] == got[1] == [f"{rtype}/{rid}" for _, rtype, rid, _ in parts]
