"""The five clinical staging tables whose FHIR extraction is a ViewDefinition (patients, encounters,
episodes, appointments, dispenses) give exactly the rows of the hand-written SQL they replaced (kept
as oracles in tests/fixtures/sql/): on a generated clinic with planted mess and amended versions in two
sources, and on hand-made edge cases (partial dates, absolute and versioned references, roles,
participants without a reference, days supply in weeks and months, tombstones, version order)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from demo.generator import GeneratorConfig, generate
from fhir_mappings.clinical.params import prepare_clinical
from fhir_mappings.clinical.tables import MACROS_SQL, STEPS, ClinicalView, clinical_context
from pipelines.catalog import StepSpec
from pipelines.sqlfiles import run_sql
from pipelines.warehouse import ensure_raw_schema, table_exists, table_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sql"
VIEW_TABLES = ("patients", "encounters", "episodes", "appointments", "dispenses")


def _step(table: str) -> StepSpec:
    return next(s for s in STEPS if s.name == f"staging.{table}")


def _land(
    con: duckdb.DuckDBPyConnection,
    rows: list[tuple[str, dict[str, Any], str]],
    *,
    deleted: bool = False,
) -> None:
    """Land (source, resource, version) rows into their raw tables."""
    by_table: dict[str, list[list[object]]] = {}
    for source, res, version in rows:
        by_table.setdefault(table_for(res["resourceType"]), []).append(
            [source, res["resourceType"], res["id"], version, json.dumps(res), deleted]
        )
    for table, values in by_table.items():
        con.executemany(
            f"""INSERT INTO raw.{table} (source, resource_type, id, version_id, version_from_server,
                   last_updated, content_sha256, resource, origin, run_id, fetched_at, deleted)
                VALUES (?, ?, ?, ?, true, NULL, 'h', ?::JSON, NULL, 'run', now(), ?)""",
            values,
        )


def _assert_same_as_oracles(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Build the roles, then each view table through its step; compare with its oracle."""
    ctx = clinical_context()
    for table in ("practitioners", "practitioner_roles", *VIEW_TABLES):
        _step(table).build(con, ctx)
    prepare_clinical(con, ctx.settings, ctx.thresholds)
    run_sql(con, MACROS_SQL)
    counts: dict[str, int] = {}
    for table in VIEW_TABLES:
        run_sql(con, FIXTURES / f"handwritten_{table}.sql")
        new, old = f"staging.{table}", f"reference_{table}"
        new_columns = con.execute(f"DESCRIBE {new}").fetchall()
        old_columns = con.execute(f"DESCRIBE {old}").fetchall()
        assert [c[:2] for c in new_columns] == [c[:2] for c in old_columns], table
        for a, b in ((new, old), (old, new)):
            extra = con.execute(f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}").fetchall()
            assert extra == [], f"rows only in {a}: {extra[:3]}"
        counts[table] = con.execute(f"SELECT count(*) FROM {new}").fetchone()[0]
        # the step leaves no work relation behind
        view = ClinicalView(table)
        assert not table_exists(con, view.rows) and not table_exists(con, view.resources)
    return counts


def test_a_generated_clinic_builds_exactly_as_before():
    con = duckdb.connect()
    ensure_raw_schema(con)
    clinic = generate(GeneratorConfig(patients=30, seed=7, mess_rate=0.08))
    versions = [
        (v, r)
        for v, r in clinic.iter_versions()
        if r["resourceType"]
        in {
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "Encounter",
            "EpisodeOfCare",
            "Appointment",
            "MedicationDispense",
        }
    ]
    _land(con, [(src, r, v) for v, r in versions for src in ("a", "b")])
    # older versions that the current version supersedes (numeric order: "10" after "9")
    older = [r for i, (_, r) in enumerate(versions) if i % 4 == 0]
    _land(con, [("a", {**r, "status": "superseded", "participant": []}, "0") for r in older])
    _land(con, [("b", r, "10") for r in older])
    _land(con, [("b", {**r, "status": "superseded"}, "9") for r in older])
    counts = _assert_same_as_oracles(con)
    assert all(n > 0 for n in counts.values()), counts
    assert counts["encounters"] > 100 and counts["dispenses"] > 10
    # the comparison covers the derived columns, not only NULLs
    filled = con.execute(
        """SELECT count(practitioner_id), count(episode_of_care_id), count(appointment_id)
           FROM staging.encounters"""
    ).fetchone()
    assert all(n > 0 for n in filled), filled
    assert con.execute("SELECT count(days_supply), count(medication_key) FROM staging.dispenses").fetchone()[
        0
    ]


def _edge_cases() -> list[tuple[str, dict[str, Any], str]]:
    def ref(r: str) -> dict[str, str]:
        return {"reference": r}

    pprf = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF"}]
    }
    other = {"coding": [{"code": "ATND"}]}
    res: list[tuple[str, dict[str, Any], str]] = [
        ("s", {"resourceType": "Practitioner", "id": "p1", "active": True}, "1"),
        ("s", {"resourceType": "Practitioner", "id": "p9"}, "1"),
        ("s", {"resourceType": "PractitionerRole", "id": "r1", "practitioner": ref("Practitioner/p9")}, "1"),
        # a role of another source does not resolve here
        ("t", {"resourceType": "PractitionerRole", "id": "r2", "practitioner": ref("Practitioner/p1")}, "1"),
        # patients: partial and missing birth dates, deceased either way, references of every kind
        ("s", {"resourceType": "Patient", "id": "pa1", "gender": "female", "birthDate": "1980"}, "1"),
        ("s", {"resourceType": "Patient", "id": "pa2", "birthDate": "1990-07", "active": False}, "1"),
        (
            "s",
            {
                "resourceType": "Patient",
                "id": "pa3",
                "birthDate": "2001-12-31",
                "deceasedDateTime": "2026-01-01",
                "managingOrganization": ref("https://ehr.example/fhir/Organization/o1/_history/3"),
            },
            "1",
        ),
        (
            "s",
            {
                "resourceType": "Patient",
                "id": "pa4",
                "deceasedBoolean": True,
                "active": True,
                "managingOrganization": ref("Practitioner/p1"),
            },
            "1",
        ),
        ("s", {"resourceType": "Patient", "id": "pa5", "deceasedBoolean": False}, "1"),
        ("s", {"resourceType": "Patient", "id": "pa6", "managingOrganization": ref("#contained")}, "1"),
        # version order is numeric: "10" after "9"
        ("s", {"resourceType": "Patient", "id": "pa7", "gender": "old"}, "9"),
        ("s", {"resourceType": "Patient", "id": "pa7", "gender": "male"}, "10"),
        # encounters: primary performer, roles, participants without a reference, partial periods
        (
            "s",
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": ref("Patient/pa1"),
                "participant": [
                    {"type": [other], "individual": ref("Practitioner/p1")},
                    {"type": [pprf]},
                    {"type": [pprf], "individual": ref("Patient/pa1")},
                    {"type": [other, pprf], "individual": ref("PractitionerRole/r1")},
                ],
                "episodeOfCare": [{"display": "no reference"}, ref("EpisodeOfCare/eoc1")],
                "serviceProvider": ref("Organization/o1"),
                "period": {"start": "2026-01-02T23:30:00+05:00", "end": "2026-01-03T00:20:00+05:00"},
                "appointment": [ref("http://x.example/fhir/Appointment/ap1")],
            },
            "1",
        ),
        (
            "s",
            {
                "resourceType": "Encounter",
                "id": "e2",
                "status": "finished",
                "subject": ref("Group/g1"),
                "participant": [
                    {"individual": ref("Location/l1")},
                    {"individual": ref("PractitionerRole/r2")},
                ],
                "period": {"start": "2026-02-03"},
            },
            "1",
        ),
        (
            "s",
            {
                "resourceType": "Encounter",
                "id": "e3",
                "participant": [{"type": [pprf], "individual": ref("Practitioner/p9")}],
                "period": {"start": "not a date"},
            },
            "1",
        ),
        ("s", {"resourceType": "Encounter", "id": "e4", "status": "planned"}, "1"),
        # a deleted encounter leaves staging
        ("s", {"resourceType": "Encounter", "id": "e5", "status": "finished"}, "1"),
        # episodes
        (
            "s",
            {
                "resourceType": "EpisodeOfCare",
                "id": "eoc1",
                "status": "active",
                "patient": ref("Patient/pa1"),
                "period": {"start": "2025-12-01T10:00:00Z"},
                "careManager": ref("PractitionerRole/r1"),
                "managingOrganization": ref("Organization/o1"),
            },
            "1",
        ),
        (
            "s",
            {
                "resourceType": "EpisodeOfCare",
                "id": "eoc2",
                "status": "finished",
                "patient": ref("Patient/pa2"),
                "period": {"start": "2025-01-01", "end": "2025-06-30"},
                "careManager": ref("Practitioner/p1"),
            },
            "1",
        ),
        (
            "s",
            {"resourceType": "EpisodeOfCare", "id": "eoc3", "careManager": ref("PractitionerRole/nope")},
            "1",
        ),
        # appointments: actors of every type, some without a reference
        (
            "s",
            {
                "resourceType": "Appointment",
                "id": "ap1",
                "status": "fulfilled",
                "start": "2026-01-02T18:00:00Z",
                "participant": [
                    {"actor": {"display": "nobody"}},
                    {"actor": ref("Location/l1")},
                    {"actor": ref("PractitionerRole/r1")},
                    {"actor": ref("Patient/pa1")},
                    {"actor": ref("Practitioner/p1")},
                ],
            },
            "1",
        ),
        ("s", {"resourceType": "Appointment", "id": "ap2", "status": "noshow", "participant": []}, "1"),
        ("s", {"resourceType": "Appointment", "id": "ap3", "start": "2026-03-01"}, "1"),
        # dispenses: medication by code, by a later coding's code, by text, by reference; supply units
        (
            "s",
            {
                "resourceType": "MedicationDispense",
                "id": "d1",
                "status": "completed",
                "subject": ref("Patient/pa1"),
                "medicationCodeableConcept": {
                    "coding": [
                        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "display": "first"},
                        {"code": "123", "display": "second"},
                    ],
                    "text": "Sertraline",
                },
                "whenHandedOver": "2026-01-05T09:00:00+01:00",
                "daysSupply": {"value": 2.5, "code": "wk", "unit": "days"},
                "quantity": {"value": 30},
                "authorizingPrescription": [ref("MedicationRequest/mr1"), ref("MedicationRequest/mr2")],
            },
            "1",
        ),
        (
            "s",
            {
                "resourceType": "MedicationDispense",
                "id": "d2",
                "medicationCodeableConcept": {"text": "only text"},
                "whenHandedOver": "2026-01-06",
                "daysSupply": {"value": 1, "unit": "months"},
            },
            "1",
        ),
        (
            "s",
            {
                "resourceType": "MedicationDispense",
                "id": "d3",
                "medicationReference": ref("Medication/m1"),
                "daysSupply": {"value": 28},
                "quantity": {"value": 0.5},
            },
            "1",
        ),
        ("s", {"resourceType": "MedicationDispense", "id": "d4", "status": "entered-in-error"}, "1"),
    ]
    return res


def test_edge_cases_build_exactly_as_before():
    con = duckdb.connect()
    ensure_raw_schema(con)
    _land(con, _edge_cases())
    _land(con, [("s", {"resourceType": "Encounter", "id": "e5"}, "2")], deleted=True)
    counts = _assert_same_as_oracles(con)
    assert counts == {"patients": 7, "encounters": 4, "episodes": 3, "appointments": 3, "dispenses": 4}
    # spot checks that the cases exercise what they are meant to
    e1 = con.execute(
        """SELECT practitioner_id, episode_of_care_id, appointment_id
           FROM staging.encounters WHERE encounter_id = 'e1'"""
    ).fetchone()
    assert e1 == ("p9", "eoc1", "ap1")  # the PPRF PractitionerRole resolved, not the first participant
    assert con.execute(
        "SELECT practitioner_id FROM staging.encounters WHERE encounter_id = 'e2'"
    ).fetchone() == (None,)  # r2 is a role of another source
    d = con.execute(
        "SELECT dispense_id, medication_key, days_supply FROM staging.dispenses ORDER BY 1"
    ).fetchall()
    assert d == [("d1", "123", 18), ("d2", "only text", 30), ("d3", "Medication/m1", 28), ("d4", None, None)]
    assert con.execute("SELECT gender FROM staging.patients WHERE patient_id = 'pa7'").fetchone() == ("male",)


def test_a_changed_view_changes_the_step_fingerprint(tmp_path, monkeypatch):
    """The rebuild fingerprint includes the ViewDefinition the step compiles."""
    import fhir_mappings.clinical.tables as clinical_tables

    step = _step("encounters")
    ctx = clinical_context()
    before = step.fingerprint_text(ctx)
    assert step.fingerprint_text(ctx) == before  # stable
    view = json.loads(ClinicalView("encounters").path.read_text())
    for name in VIEW_TABLES:
        (tmp_path / f"{name}.json").write_text(ClinicalView(name).path.read_text())
    monkeypatch.setattr(clinical_tables, "VIEWS_DIR", tmp_path)
    assert step.fingerprint_text(ctx) == before  # the same definition, elsewhere
    view["select"][0]["column"][1]["path"] = "status.first()"
    (tmp_path / "encounters.json").write_text(json.dumps(view, indent=4))
    assert step.fingerprint_text(ctx) != before


@pytest.mark.parametrize("table", VIEW_TABLES)
def test_each_view_table_declares_its_view_and_source(table):
    step = _step(table)
    view = ClinicalView(table)
    assert view.path in step.files and view.source_sql in step.files
    assert view.path.is_file() and view.source_sql.is_file()
    assert json.loads(view.path.read_text())["name"] == table
