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

from fhir_mappings.clinical.tables import AS_OF_INPUTS
from marts.adherence import ADHERENCE_PERIODS_SQL, ADHERENCE_SQL, MEDICATION_MAP_SQL, PDC_SQL, build_adherence
from marts.alliance import ALLIANCE_SESSIONS_SQL, build_alliance_sessions
from marts.associations import ADHERENCE_SQL as ASSOCIATIONS_ADHERENCE_SQL
from marts.associations import EPISODES_SQL as ASSOCIATIONS_EPISODES_SQL
from marts.associations import PATIENT_ALLIANCE_SQL, build_alliance_associations
from marts.associations import PROSPECTIVE_SQL as ASSOCIATIONS_PROSPECTIVE_SQL
from marts.associations import PROSPECTIVE_WINDOWS_SQL as ASSOCIATIONS_PROSPECTIVE_WINDOWS_SQL
from marts.context import MartBuild, fingerprint_text, make_context
from marts.feedback import ALLIANCE_SQL as FEEDBACK_ALLIANCE_SQL
from marts.feedback import EPISODES_SQL as FEEDBACK_EPISODES_SQL
from marts.feedback import REPORT_SQL as FEEDBACK_REPORT_SQL
from marts.feedback import SCORES_SQL as FEEDBACK_SCORES_SQL
from marts.feedback import build_expected_response, build_not_on_track, build_report_not_on_track
from marts.frames import WRITE_ROWS_SQL
from marts.moderation import SKILL_EPISODES_SQL
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
from marts.report_marts import (
    SQL_DIR as REPORT_SQL_DIR,
)
from marts.report_marts import (
    build_report_adherence_by_alliance_tertile,
    build_report_alliance_trajectory,
    build_report_data_quality,
    build_report_early_alliance_bins,
    build_report_overview,
    build_sql_mart,
)
from marts.therapists import EPISODES_SQL as THERAPIST_EPISODES_SQL
from marts.therapists import SESSIONS_SQL as THERAPIST_SESSIONS_SQL
from marts.therapists import build_therapist_alliance
from pipelines.catalog import StepSpec, TableSpec
from quality_checks.summary import SQL_DIR as QUALITY_SQL_DIR


def _mart_step(
    table: TableSpec,
    inputs: tuple[str, ...],
    fill: MartBuild,
    *,
    optional_inputs: tuple[str, ...] = (),
    sql_files: tuple[Path, ...] = (),
    after: tuple[str, ...] = (),
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
        after=after,
    )


ALLIANCE_SESSIONS = TableSpec(
    published_to="restricted",
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
    published_to="restricted",
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
    published_to="restricted",
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
    published_to="bi",
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
    published_to="bi",
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
    published_to="bi",
    name="marts.alliance_associations",
    grain="One row per question x method",
    key=("question_id", "method"),
    description=(
        "the clinic's own estimates (with CI, n and method) of alliance vs outcome, early alliance vs "
        "outcome, patient- vs clinician-rated alliance vs MARS, DAI-10 and PDC, rater agreement, "
        "therapist ICC, rupture repair vs outcome, CBT skill use and alliance vs endpoint PHQ-9 (additive "
        "and moderation models)."
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
        sql_files=(ADHERENCE_PERIODS_SQL, PDC_SQL, MEDICATION_MAP_SQL),
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
            MEDICATION_MAP_SQL,
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
        (
            "marts.episode_outcomes",
            "marts.adherence",
            "marts.alliance_sessions",
            # the prospective adherence window: early sessions, MARS / DAI-10 and fills after them
            "staging.sessions",
            "staging.session_measures",
            "staging.dispenses",
            *AS_OF_INPUTS,  # the prospective PDC reads mart_params' as-of date
        ),
        MartBuild(
            ALLIANCE_ASSOCIATIONS.name, lambda con, ctx: build_alliance_associations(con, ctx.settings)
        ),
        sql_files=(
            ASSOCIATIONS_ADHERENCE_SQL,
            PATIENT_ALLIANCE_SQL,
            SKILL_EPISODES_SQL,
            WRITE_ROWS_SQL,
            ASSOCIATIONS_PROSPECTIVE_WINDOWS_SQL,
            PDC_SQL,
            ASSOCIATIONS_PROSPECTIVE_SQL,
        ),
    ),
)


# --- What the QI report shows (marts/report_marts.py): aggregates under the same suppression rules ---

REPORT_OVERVIEW = TableSpec(
    published_to="bi",
    name="marts.report_overview",
    grain="One row per practice",
    key=("level",),
    description=(
        "patients, episodes and sessions, alliance measurement share, session date range, months, clinics "
        "and therapists with a reportable caseload (QI report overview); small counts suppressed, also "
        "against the monthly totals."
    ),
    sql=REPORT_SQL_DIR / "report_overview.sql",
)
REPORT_ALLIANCE_TRAJECTORY = TableSpec(
    published_to="bi",
    name="marts.report_alliance_trajectory",
    grain="One row per session number of a treatment episode, plus one over all sessions",
    key=("level", "session_number"),
    description=(
        "patient- and clinician-rated sessions and mean alliance with the patient-rated interval (QI report "
        "trajectories); small counts suppressed with complements."
    ),
    sql=REPORT_SQL_DIR / "report_alliance_trajectory.sql",
)
REPORT_EARLY_ALLIANCE_FIT = TableSpec(
    published_to="bi",
    name="marts.report_early_alliance_fit",
    grain="One row per practice",
    key=("level",),
    description=(
        "episodes with early alliance and PHQ-9 improvement and the least-squares line between them (QI "
        "report scatter plot); suppressed under min_cell episodes."
    ),
    sql=REPORT_SQL_DIR / "report_early_alliance_fit.sql",
)
REPORT_EARLY_ALLIANCE_BINS = TableSpec(
    name="marts.report_early_alliance_bins",
    published_to="bi",
    grain="One row per half-point band of early patient-rated alliance (1-1.5 to 4.5-5)",
    key=("band",),
    description=(
        "episodes and mean PHQ-9 improvement per band of early alliance (QI report chart: bands, never "
        "single episodes); small bands suppressed with complements against the fit's episodes."
    ),
    sql=REPORT_SQL_DIR / "report_early_alliance_bins.sql",
)
REPORT_THERAPIST_FUNNEL = TableSpec(
    published_to="bi",
    name="marts.report_therapist_funnel",
    grain="One row per practice",
    key=("level",),
    description=(
        "the therapist_alliance period the QI report's funnel plot shows, its model values and the "
        "therapists drawn, hidden and outside the outer limits."
    ),
    sql=REPORT_SQL_DIR / "report_therapist_funnel.sql",
)
REPORT_ADHERENCE_BY_TERTILE = TableSpec(
    published_to="bi",
    name="marts.report_adherence_by_alliance_tertile",
    grain="One row per adherence measure (PDC, MARS) x rater x third of alliance",
    key=("measure", "rater", "tertile"),
    description=(
        "patient-periods and mean adherence (QI report bar charts); a group's thirds suppressed together."
    ),
    sql=REPORT_SQL_DIR / "report_adherence_by_alliance_tertile.sql",
)
REPORT_DATA_QUALITY = TableSpec(
    published_to="bi",
    name="marts.report_data_quality",
    grain="One row per table x severity of the newest data-quality run, plus a total row",
    key=("level", "table_name", "severity"),
    description=(
        "checks run, passed, failed, skipped, quarantined records, pass rate (QI report); small record "
        "counts suppressed."
    ),
)

REPORT_STEPS: tuple[StepSpec, ...] = (
    _mart_step(
        REPORT_OVERVIEW,
        ("marts.alliance_sessions", "marts.qi_monthly", "marts.therapist_alliance"),
        MartBuild(REPORT_OVERVIEW.name, lambda con, ctx: build_report_overview(con, ctx.settings)),
        sql_files=(WRITE_ROWS_SQL,),
    ),
    _mart_step(
        REPORT_ALLIANCE_TRAJECTORY,
        ("marts.alliance_sessions",),
        MartBuild(
            REPORT_ALLIANCE_TRAJECTORY.name,
            lambda con, ctx: build_report_alliance_trajectory(con, ctx.settings),
        ),
        sql_files=(WRITE_ROWS_SQL,),
    ),
    _mart_step(
        REPORT_EARLY_ALLIANCE_FIT,
        ("marts.episode_outcomes",),
        MartBuild(
            REPORT_EARLY_ALLIANCE_FIT.name, lambda con, ctx: build_sql_mart(con, "report_early_alliance_fit")
        ),
    ),
    _mart_step(
        REPORT_EARLY_ALLIANCE_BINS,
        ("marts.episode_outcomes",),
        MartBuild(
            REPORT_EARLY_ALLIANCE_BINS.name,
            lambda con, ctx: build_report_early_alliance_bins(con, ctx.settings),
        ),
        sql_files=(WRITE_ROWS_SQL,),
    ),
    _mart_step(
        REPORT_THERAPIST_FUNNEL,
        ("marts.therapist_alliance",),
        MartBuild(
            REPORT_THERAPIST_FUNNEL.name, lambda con, ctx: build_sql_mart(con, "report_therapist_funnel")
        ),
    ),
    _mart_step(
        REPORT_ADHERENCE_BY_TERTILE,
        ("marts.adherence",),
        MartBuild(
            REPORT_ADHERENCE_BY_TERTILE.name,
            lambda con, ctx: build_report_adherence_by_alliance_tertile(con, ctx.settings),
        ),
        sql_files=(WRITE_ROWS_SQL,),
    ),
    _mart_step(
        REPORT_DATA_QUALITY,
        ("quality.check_results",),
        MartBuild(REPORT_DATA_QUALITY.name, lambda con, ctx: build_report_data_quality(con, ctx.settings)),
        sql_files=(QUALITY_SQL_DIR / "newest_run.sql", QUALITY_SQL_DIR / "run_summary.sql", WRITE_ROWS_SQL),
        after=tuple(s.name for s in STEPS),
    ),
)
STEPS = (*STEPS, *REPORT_STEPS)


# --- Feedback (marts/feedback.py, docs/feedback.md): expected response and who is not on track ---

EXPECTED_RESPONSE = TableSpec(
    # quantiles are order statistics (a real patient's score) of cells as small as feedback_min_cell_n
    published_to="restricted",
    name="marts.expected_response",
    grain="One row per outcome measure x baseline band x session number with enough closed episodes",
    key=("instrument", "baseline_band", "session_number"),
    description=(
        "expected-response curves from the clinic's closed episodes: episodes, 25th/50th/75th percentile "
        "score and the not-on-track boundary, monotone over sessions within a band."
    ),
    sql=FEEDBACK_SCORES_SQL,
)
NOT_ON_TRACK = TableSpec(
    published_to="restricted",
    name="marts.not_on_track",
    grain="One row per open treatment episode (its latest scores)",
    key=("episode_key",),
    description=(
        "each outcome measure's latest score against its expected band, flag (not_on_track / on_track / "
        "insufficient_data) and the method that produced it (empirical / rule_based), and alliance alerts "
        "(unrepaired reliable drop, low early patient-rated alliance). Keyed pseudonyms only."
    ),
    sql=FEEDBACK_SCORES_SQL,
)
REPORT_NOT_ON_TRACK = TableSpec(
    published_to="bi",
    name="marts.report_not_on_track",
    grain="One row per practice",
    key=("level",),
    description=(
        "open episodes by flag (not on track, on track, insufficient data), flags by method and alliance "
        "alerts (QI report panel); small counts suppressed with complements."
    ),
    sql=FEEDBACK_REPORT_SQL,
)

FEEDBACK_STEPS: tuple[StepSpec, ...] = (
    _mart_step(
        EXPECTED_RESPONSE,
        ("staging.session_measures", "staging.treatment_episodes"),
        MartBuild(EXPECTED_RESPONSE.name, build_expected_response),
        sql_files=(FEEDBACK_EPISODES_SQL, WRITE_ROWS_SQL),
    ),
    _mart_step(
        NOT_ON_TRACK,
        ("staging.session_measures", "staging.treatment_episodes", "marts.alliance_sessions"),
        MartBuild(NOT_ON_TRACK.name, build_not_on_track),
        sql_files=(FEEDBACK_EPISODES_SQL, FEEDBACK_ALLIANCE_SQL, WRITE_ROWS_SQL),
    ),
    _mart_step(
        REPORT_NOT_ON_TRACK,
        ("marts.not_on_track",),
        MartBuild(REPORT_NOT_ON_TRACK.name, build_report_not_on_track),
        sql_files=(WRITE_ROWS_SQL,),
    ),
)
STEPS = (*STEPS, *FEEDBACK_STEPS)
