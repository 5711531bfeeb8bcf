"""The marts, declared once: one build step per mart (`pipelines.catalog.StepSpec`), in build order.

Each step names its table (grain, key, description, SQL file), exactly the tables its SQL and
Python read, and how it is built. `marts.build.build_marts` and the Dagster assets both build from
these declarations; `tests/unit/test_marts_tables.py` checks every SQL file's `schema.table`
references against the declared inputs.

Adding a mart: write `marts/sql/<mart>.sql` (and, when statistics need Python, a module with the
function that fills the table), declare its step here, and document its columns in docs/marts.md.
Work tables a step creates (`_placed_appointments`, `_adherence_pdc`, ...) are temporary, per
connection, and not declared; nor are `mart_params` and the status tables (`marts.context.prepare_marts`).
"""

from __future__ import annotations

from pathlib import Path

from marts.adherence import ADHERENCE_PERIODS_SQL, ADHERENCE_SQL, PDC_SQL, build_adherence
from marts.alliance import ALLIANCE_SESSIONS_SQL, build_alliance_sessions
from marts.associations import ADHERENCE_SQL as ASSOCIATIONS_ADHERENCE_SQL
from marts.associations import EPISODES_SQL as ASSOCIATIONS_EPISODES_SQL
from marts.associations import PATIENT_ALLIANCE_SQL, build_alliance_associations
from marts.context import MartBuild, fingerprint_text, make_context
from marts.frames import WRITE_ROWS_SQL
from marts.outcomes import (
    EPISODE_APPOINTMENTS_SQL,
    EPISODE_OUTCOMES_SQL,
    PLACED_APPOINTMENTS_SQL,
    build_episode_outcomes,
)
from marts.qi import (
    DATA_QUALITY_SQL,
    PATIENT_MONTHS_SQL,
    QI_COUNTS_SQL,
    QUARANTINED_NONE_SQL,
    QUARANTINED_SQL,
    RESPONSES_FLATTENED_SQL,
    RESPONSES_SCORED_SQL,
    build_qi_monthly,
)
from marts.therapists import EPISODES_SQL as THERAPIST_EPISODES_SQL
from marts.therapists import SESSIONS_SQL as THERAPIST_SESSIONS_SQL
from marts.therapists import build_therapist_alliance
from fhir_mappings.clinical.tables import AS_OF_INPUTS
from pipelines.catalog import StepSpec, TableSpec


def _mart_step(
    table: TableSpec,
    inputs: tuple[str, ...],
    fill: MartBuild,
    *,
    optional_inputs: tuple[str, ...] = (),
    sql_files: tuple[Path, ...] = (),
) -> StepSpec:
    """The build step `marts.<mart>` of one mart (settings, key and registry shape every mart)."""
    return StepSpec(
        name=table.name,
        layer="marts",
        tables=(table,),
        inputs=inputs,
        optional_inputs=optional_inputs,
        build=fill,
        context=make_context,
        fingerprint_text=fingerprint_text,
        sql_files=sql_files,
    )


ALLIANCE_SESSIONS = TableSpec(
    name="marts.alliance_sessions",
    grain="One row per attended session",
    key=("session_key",),
    description=(
        "patient- and clinician-rated alliance (WAI-SR total, mean, goal, task, bond; SRS), rater "
        "discrepancy, low-alliance flags, rupture and repair flags, thresholds used. Keyed pseudonyms only."
    ),
    sql=ALLIANCE_SESSIONS_SQL,
)
EPISODE_OUTCOMES = TableSpec(
    name="marts.episode_outcomes",
    grain="One row per treatment episode",
    key=("episode_key",),
    description=(
        "baseline and last PHQ-9/GAD-7/ORS, change, reliable improvement and deterioration, recovery, "
        "reliable recovery, response, remission, early and mean alliance by rater, ruptures, attendance, "
        "dropout, thresholds used."
    ),
    sql=EPISODE_OUTCOMES_SQL,
)
ADHERENCE = TableSpec(
    name="marts.adherence",
    grain="One row per patient x adherence period (PQA measurement year by default)",
    key=("patient_key", "period_type", "period_start"),
    description=(
        "PDC and adherent flag, MARS and DAI-10 first/last/mean, attendance, patient- and "
        "clinician-rated alliance side by side."
    ),
    sql=ADHERENCE_SQL,
)
THERAPIST_ALLIANCE = TableSpec(
    name="marts.therapist_alliance",
    grain="One row per therapist x period",
    key=("therapist_key", "period_type", "period_start"),
    description=(
        "caseload, mean alliance, empirical-Bayes shrunken mean with its interval, ICC, funnel limits, "
        "outcome rates; rows under min_cell patients suppressed."
    ),
    sql=THERAPIST_SESSIONS_SQL,
)
QI_MONTHLY = TableSpec(
    name="marts.qi_monthly",
    grain="One row per clinic x month (plus a practice row per month)",
    key=("level", "clinic_key", "month"),  # clinic_key is NULL on practice rows
    description=(
        "measurement completion, mean alliance, low-alliance share, ruptures, recovery and reliable "
        "improvement, PDC adherence, attendance, data-quality pass rate; small cells suppressed with "
        "complements."
    ),
    sql=QI_COUNTS_SQL,
)
ALLIANCE_ASSOCIATIONS = TableSpec(
    name="marts.alliance_associations",
    grain="One row per question x method",
    key=("question_id", "method"),
    description=(
        "the clinic's own estimates (with CI, n and method) of alliance vs outcome, early alliance vs "
        "outcome, patient- vs clinician-rated alliance vs MARS, DAI-10 and PDC, rater agreement, "
        "therapist ICC, rupture repair vs outcome."
    ),
    sql=ASSOCIATIONS_EPISODES_SQL,
)

STEPS: tuple[StepSpec, ...] = (
    _mart_step(
        ALLIANCE_SESSIONS,
        ("staging.session_measures", "staging.sessions", "staging.treatment_episodes"),
        MartBuild(ALLIANCE_SESSIONS.name, lambda con, ctx: build_alliance_sessions(con)),
    ),
    _mart_step(
        EPISODE_OUTCOMES,
        (
            "staging.treatment_episodes",
            "staging.appointments",
            "staging.session_measures",
            "staging.patients",
            "marts.alliance_sessions",
            *AS_OF_INPUTS,
        ),
        MartBuild(EPISODE_OUTCOMES.name, lambda con, ctx: build_episode_outcomes(con)),
        sql_files=(PLACED_APPOINTMENTS_SQL, EPISODE_APPOINTMENTS_SQL),
    ),
    _mart_step(
        ADHERENCE,
        (
            "staging.sessions",
            "staging.dispenses",
            "staging.session_measures",
            "staging.appointments",
            *AS_OF_INPUTS,
        ),
        MartBuild(ADHERENCE.name, lambda con, ctx: build_adherence(con)),
        sql_files=(ADHERENCE_PERIODS_SQL, PDC_SQL),
    ),
    _mart_step(
        THERAPIST_ALLIANCE,
        ("marts.alliance_sessions", "marts.episode_outcomes"),
        MartBuild(THERAPIST_ALLIANCE.name, lambda con, ctx: build_therapist_alliance(con, ctx.settings)),
        sql_files=(THERAPIST_EPISODES_SQL, WRITE_ROWS_SQL),
    ),
    _mart_step(
        QI_MONTHLY,
        (
            "marts.alliance_sessions",
            "marts.episode_outcomes",
            "staging.sessions",
            "staging.treatment_episodes",
            "staging.appointments",
            "staging.dispenses",
            "staging.measure_scores",
            *AS_OF_INPUTS,
        ),
        MartBuild(QI_MONTHLY.name, lambda con, ctx: build_qi_monthly(con, ctx.settings)),
        # read when present: the flattened responses (else the scores list the responses) and the
        # current quarantine (absent before the quality checks first run)
        optional_inputs=("staging.questionnaire_responses", "quality.current_quarantine"),
        sql_files=(
            PLACED_APPOINTMENTS_SQL,
            PATIENT_MONTHS_SQL,
            PDC_SQL,
            RESPONSES_FLATTENED_SQL,
            RESPONSES_SCORED_SQL,
            QUARANTINED_SQL,
            QUARANTINED_NONE_SQL,
            DATA_QUALITY_SQL,
            WRITE_ROWS_SQL,
        ),
    ),
    _mart_step(
        ALLIANCE_ASSOCIATIONS,
        ("marts.episode_outcomes", "marts.adherence", "marts.alliance_sessions"),
        MartBuild(
            ALLIANCE_ASSOCIATIONS.name, lambda con, ctx: build_alliance_associations(con, ctx.settings)
        ),
        sql_files=(ASSOCIATIONS_ADHERENCE_SQL, PATIENT_ALLIANCE_SQL, WRITE_ROWS_SQL),
    ),
)
