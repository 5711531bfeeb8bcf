"""One warehouse built on a generated clinic (raw -> scores -> quality checks -> marts -> mart
checks), built once per test session and shared by the publish, query-doc and report tests, with what
those tests expect of it."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

KEY = b"publish-test-key-0123456789abcdef"
SOURCE = "demo"
PATIENTS = 240  # ~20 patients per therapist: enough for every small-cell rule to leave rows to show
SEED = 42
FHIR_ID_PATTERNS = (
    r"(Patient|Practitioner|PractitionerRole|Encounter|EpisodeOfCare|Organization|Appointment|"
    r"QuestionnaireResponse|Questionnaire|MedicationRequest|MedicationDispense)/",
    r"(^|[^0-9a-z])(pat|prac|enc|eoc|org|qr|appt|md|mr|role)-",
)
# chart id -> least number of data marks the QI report must draw on the generated clinic
CHART_FLOORS = {
    "monthly_kpis": 20,
    "alliance_trajectories": 15,
    "early_alliance_phq9": 4,  # bands of early alliance (and the fitted line), never single episodes
    # therapists whose alliance count is shown (a count hidden by a complement hides the dot too)
    "therapist_funnel": 15,
    "adherence_pdc": 6,
    "adherence_mars": 6,
    "data_quality": 10,
}


def generated_warehouse_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse built on a generated clinic (raw -> scores -> quality checks -> marts -> mart checks),
    built once per test session and shared by the publish, query-doc and report tests (copy it before
    changing it)."""
    base = tmp_path_factory.getbasetemp() / f"generated-warehouse-{PATIENTS}-{SEED}"
    done = base / "warehouse.duckdb"
    if done.exists():
        return done
    from demo.generator import GeneratorConfig, generate
    from demo.loader import write_ndjson
    from fhir_mappings.flatten import build_questionnaire_answers
    from fhir_mappings.questionnaires import build_questionnaire_tables
    from fhir_mappings.scoring import build_measure_scores
    from marts.build import build_mart, build_marts, make_context
    from marts.settings import load_mart_settings
    from pipelines.extract import SourceSpec, extract_resource_type
    from pipelines.settings import RESOURCE_TYPES
    from pipelines.warehouse import ensure_raw_schema
    from quality_checks.runner import run_all
    from quality_checks.structural import StructuralValidator
    from quality_checks.suite import load_suites

    base.mkdir(parents=True, exist_ok=True)
    clinic = generate(GeneratorConfig(patients=PATIENTS, seed=SEED))
    folder = base / "ndjson"
    write_ndjson(folder, clinic)
    building = base / "building.duckdb"
    con = duckdb.connect(str(building))
    try:
        ensure_raw_schema(con)
        validator = StructuralValidator()
        spec = SourceSpec(name=SOURCE, kind="folder", folder=str(folder))
        for rtype in RESOURCE_TYPES:
            extract_resource_type(con, spec, None, rtype, "test-run", validator)
        build_questionnaire_answers(con)
        build_questionnaire_tables(con)
        build_measure_scores(con)
        suites = load_suites()
        # as in the pipeline: checks before the marts (quarantine feeds them), mart checks after
        run_all(con, [s for s in suites if not s.name.startswith("mart_")], run_id="test-run")
        build_marts(con, load_mart_settings(env={}), key=KEY)
        run_all(con, [s for s in suites if s.name.startswith("mart_")], run_id="test-run")
        # as in a Dagster run, where the marts' blocking checks run before report_data_quality is built
        build_mart(con, "report_data_quality", make_context(load_mart_settings(env={}), KEY))
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(building, done)
    return done
