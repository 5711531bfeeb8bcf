"""Clinical staging tables: one declaration each (`pipelines/catalog.py`), one SQL file each.

Each table is one step, so a table whose inputs did not change is kept. Every table is rebuilt whole
(CREATE OR REPLACE) when it runs, so a rerun gives the same rows. No names, telecoms, identifiers or
free text are carried; patients keep a birth year and an age band (the exact birth date stays in raw).

Five tables (patients, encounters, episodes, appointments, dispenses) read FHIR through a
SQL-on-FHIR v2 ViewDefinition (`fhir_mappings/views/definitions/<table>.json`), compiled at run time
over the current version of each resource (`<table>_resources.sql`); their SQL file only derives
(joins, ages, practitioner resolution, unit conversion) from the view's rows. See docs/views.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from fhir_mappings.clinical.contract import check_score_contract
from fhir_mappings.clinical.params import SQL_DIR, prepare_clinical
from fhir_mappings.views import build_view, definition_fingerprint, load_view_definition
from fhir_mappings.views.sql import quote_identifier
from marts.settings import MartSettings, Thresholds, load_mart_settings, thresholds_from_registry
from pipelines.catalog import StepSpec, TableSpec
from pipelines.sqlfiles import count_rows, query_sql, run_sql
from pipelines.warehouse import single_threaded, table_exists
from quality_checks.store import ensure_quality_schema

MACROS_SQL = SQL_DIR / "macros.sql"
VIEW_CLEANUP_SQL = SQL_DIR / "view_cleanup.sql"
VIEWS_DIR = Path(__file__).resolve().parent.parent / "views" / "definitions"
# Raw tables behind the reference date (`reference_date.sql`): SQL that reads mart_params.as_of_date
# depends on them too.
AS_OF_INPUTS = ("raw.encounter", "raw.appointment", "raw.medication_dispense")


@dataclass(frozen=True)
class ClinicalContext:
    """Settings and instrument thresholds the clinical SQL reads through mart_params."""

    settings: MartSettings
    thresholds: Thresholds


def clinical_context() -> ClinicalContext:
    """Settings from the environment / settings file, thresholds from the instrument registry."""
    return ClinicalContext(load_mart_settings(), thresholds_from_registry())


def _fingerprint(ctx: ClinicalContext) -> str:
    return f"{ctx.settings!r}|{ctx.thresholds!r}"


@dataclass(frozen=True)
class ClinicalView:
    """A clinical table's FHIR extraction: the ViewDefinition `<table>.json`, compiled at run time.

    `<table>_resources.sql` makes the temp view `<table>_resources` (the current version of each
    resource); the compiled ViewDefinition over it becomes the temp view `<table>_view`, which the
    table's SQL reads. Every row carries its FHIR `source` in front of the view's columns.
    """

    table: str

    @property
    def path(self) -> Path:
        """The ViewDefinition file."""
        return VIEWS_DIR / f"{self.table}.json"

    @property
    def source_sql(self) -> Path:
        """The SQL file that makes the relation the view reads."""
        return SQL_DIR / f"{self.table}_resources.sql"

    @property
    def resources(self) -> str:
        """The relation the view reads: (source, id, resource), one row per current resource."""
        return f"{self.table}_resources"

    @property
    def rows(self) -> str:
        """The relation the compiled view becomes (what the table's SQL reads)."""
        return f"{self.table}_view"

    def compiled_sql(self) -> str:
        """The view compiled to one DuckDB query over `resources`, carrying `source`."""
        view = load_view_definition(self.path)
        return build_view(view, source_relation=self.resources, carry=("source",)).sql

    def fingerprint(self) -> str:
        """The view's meaning, for the step's rebuild fingerprint: a changed view rebuilds the table."""
        return definition_fingerprint(load_view_definition(self.path))

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make `resources` and `rows` on this connection (dropped again by `drop`)."""
        run_sql(con, self.source_sql)
        # SQL the compiler generated from the shipped view: names quoted, values as literals
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote_identifier(self.rows)} AS {self.compiled_sql()}")

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the work relations (also after a failed build)."""
        run_sql(con, VIEW_CLEANUP_SQL, identifiers={"rows": self.rows, "resources": self.resources})


def _sql_step(
    table: str,
    grain: str,
    key: tuple[str, ...],
    inputs: tuple[str, ...],
    description: str,
    *,
    view: bool = False,
) -> StepSpec:
    """A step that runs `fhir_mappings/sql/clinical/<table>.sql` after `prepare_clinical`.

    With `view`, the SQL reads the rows of the table's ViewDefinition (`ClinicalView`), compiled and
    created first; the view file is one of the step's files and part of its fingerprint.
    """
    name = f"staging.{table}"
    path = SQL_DIR / f"{table}.sql"
    # practitioner_of() reads staging.practitioner_roles, and DuckDB binds a macro's tables when it is
    # created: the steps that call it create it themselves, after the roles table exists.
    files = (MACROS_SQL, path) if "practitioner_of(" in path.read_text() else (path,)
    clinical_view = ClinicalView(table) if view else None

    def build(con: duckdb.DuckDBPyConnection, ctx: ClinicalContext) -> Mapping[str, int]:
        prepare_clinical(con, ctx.settings, ctx.thresholds)
        with single_threaded(con):
            try:
                if clinical_view is not None:
                    clinical_view.create(con)
                for file in files:
                    run_sql(con, file)
            finally:
                if clinical_view is not None:
                    clinical_view.drop(con)
        return {"rows": count_rows(con, name)}

    def fingerprint_text(ctx: ClinicalContext) -> str:
        text = _fingerprint(ctx)
        return f"{text}|view:{clinical_view.fingerprint()}" if clinical_view is not None else text

    declared = (
        (clinical_view.source_sql, clinical_view.path, *files, VIEW_CLEANUP_SQL)
        if clinical_view is not None
        else files
    )
    return StepSpec(
        name=name,
        layer="staging",
        tables=(TableSpec(name, grain, key, description, path),),
        inputs=inputs,
        build=build,
        context=clinical_context,
        fingerprint_text=fingerprint_text,
        sql_files=declared,
    )


def build_session_measures(con: duckdb.DuckDBPyConnection, ctx: ClinicalContext) -> Mapping[str, int]:
    """(Re)build `staging.session_measures`; returns its row count and what did not link.

    Counts (responses with a valid total): `rows`; `responses_linked` (used); `responses_unlinked` (no
    encounter, or the encounter is not an attended session of the response's patient);
    `responses_superseded` (older resubmissions at the same encounter); `responses_quarantined` (valid
    responses left out because the quality layer quarantined them).
    """
    check_score_contract(con)
    prepare_clinical(con, ctx.settings, ctx.thresholds)
    if not table_exists(con, "quality.current_quarantine"):
        ensure_quality_schema(con)  # the quarantine view exists (empty) before any check has run
    with single_threaded(con):
        run_sql(con, SQL_DIR / "session_measures.sql")
    row = query_sql(con, SQL_DIR / "session_measures_counts.sql")[0]
    run_sql(con, SQL_DIR / "session_measures_cleanup.sql")
    names = (
        "rows",
        "responses_linked",
        "responses_unlinked",
        "responses_superseded",
        "responses_quarantined",
    )
    return {n: int(v) for n, v in zip(names, row, strict=True)}  # type: ignore[call-overload]


STEPS: tuple[StepSpec, ...] = (
    _sql_step(
        "practitioners",
        "One row per Practitioner (newest version)",
        ("source", "practitioner_id"),
        ("raw.practitioner",),
        "id, active, gender; no names or contacts.",
    ),
    _sql_step(
        "practitioner_roles",
        "One row per PractitionerRole (newest version)",
        ("source", "role_id"),
        ("raw.practitioner_role",),
        "practitioner, organization, role code.",
    ),
    _sql_step(
        "patients",
        "One row per Patient (newest version)",
        ("source", "patient_id"),
        ("raw.patient", *AS_OF_INPUTS),
        "gender, birth year, age and age band at the reference date, managing organization; no names, "
        "identifiers, contacts or exact birth date.",
        view=True,
    ),
    _sql_step(
        "encounters",
        "One row per Encounter (newest version)",
        ("source", "encounter_id"),
        ("raw.encounter", "staging.practitioner_roles"),
        "patient, EpisodeOfCare, practitioner (primary performer, PractitionerRole resolved), clinic "
        "(serviceProvider), status, period, appointment.",
        view=True,
    ),
    _sql_step(
        "episodes",
        "One row per EpisodeOfCare (newest version)",
        ("source", "episode_id"),
        ("raw.episode_of_care", "staging.practitioner_roles"),
        "patient, status, period, care manager, managing organization.",
        view=True,
    ),
    _sql_step(
        "appointments",
        "One row per Appointment (newest version)",
        ("source", "appointment_id"),
        ("raw.appointment", "staging.practitioner_roles"),
        "patient, practitioner, status, start.",
        view=True,
    ),
    _sql_step(
        "dispenses",
        "One row per MedicationDispense (newest version)",
        ("source", "dispense_id"),
        ("raw.medication_dispense",),
        "patient, medication code/display/key, whenHandedOver, daysSupply (days), status, authorizing "
        "MedicationRequest.",
        view=True,
    ),
    _sql_step(
        "medication_requests",
        "One row per MedicationRequest (newest version)",
        ("source", "medication_request_id"),
        ("raw.medication_request", "staging.practitioner_roles"),
        "patient, medication, status, intent, authoredOn.",
    ),
    _sql_step(
        "sessions",
        "One row per attended session (finished Encounter)",
        ("source", "encounter_id"),
        ("staging.encounters", "staging.episodes", "staging.appointments", *AS_OF_INPUTS),
        "with its session number within the treatment episode: the EpisodeOfCare when the Encounter names "
        "one, else a gap rule (new episode after more than episode_gap_days without a session); numbered "
        "among the episode's attended sessions and attended Appointments that have no session of their own.",
    ),
    _sql_step(
        "treatment_episodes",
        "One row per treatment episode (EpisodeOfCare or gap-rule episode)",
        ("source", "episode_id"),
        ("staging.sessions", "staging.episodes", "raw.patient", *AS_OF_INPUTS),
        "patient, status, closed, period, therapist, clinic, sessions attended, age band at start.",
    ),
    StepSpec(
        name="staging.session_measures",
        layer="staging",
        tables=(
            TableSpec(
                "staging.session_measures",
                "One row per session x instrument x scale",
                ("source", "encounter_id", "instrument", "scale"),
                "The valid, non-quarantined score of the newest response of each instrument at each "
                "attended session, with its rater.",
                SQL_DIR / "session_measures.sql",
            ),
        ),
        inputs=("staging.measure_scores", "staging.sessions", "quality.current_quarantine"),
        build=build_session_measures,
        context=clinical_context,
        fingerprint_text=_fingerprint,
        sql_files=(
            SQL_DIR / "score_contract_columns.sql",
            SQL_DIR / "session_measures.sql",
            SQL_DIR / "session_measures_counts.sql",
            SQL_DIR / "session_measures_cleanup.sql",
        ),
    ),
)

CLINICAL_TABLES: tuple[str, ...] = tuple(s.tables[0].short_name for s in STEPS)
SQL_FILES: tuple[Path, ...] = tuple(p for s in STEPS for p in s.files)
