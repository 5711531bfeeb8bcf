"""Clinical staging and marts: thin Dagster assets over `marts/` (pure Python + DuckDB).

Keys `staging/<table>` (group `staging`) and `marts/<mart>` (group `marts`). Mart settings come from
`ALLIANCE_QI_MART_SETTINGS` / `ALLIANCE_QI_MART_*`, the pseudonym key from `ALLIANCE_QI_PSEUDONYM_KEY`
or `ALLIANCE_QI_PSEUDONYM_KEY_FILE` (never from Dagster config). Every table is rebuilt whole, so
re-materialising changes nothing.
"""

import hashlib
import hmac

import dagster as dg

from assets.scores import SCORES_STEP
from fhir_mappings.registry import load_registry, registry_fingerprint
from marts.build import (
    MART_INPUTS,
    MART_NAMES,
    STAGING_BUILT,
    MartContext,
    build_mart,
    build_staging,
    make_context,
)
from marts.staging import RAW_INPUTS, STAGING_INPUTS
from pipelines import build_state
from pipelines.automation import is_full_refresh
from pipelines.resources.fhir_source import WarehouseResource


def _upstream_steps(names: tuple[str, ...]) -> list[str]:
    """build_state step names of staging tables (scores and the answer tables have their own)."""
    named = {"measure_scores": SCORES_STEP, "questionnaire_answers": "staging.questionnaire_answers"}
    return [named.get(n, f"staging.{n}") for n in names]


def _settings_text(ctx: MartContext) -> str:
    """Mart settings, registry thresholds, and a keyed MAC of a constant (changes with the key,
    reveals nothing about it): rebuild when any of them changes."""
    mac = hmac.new(ctx.key, b"alliance-qi build state", hashlib.sha256).hexdigest() if ctx.key else ""
    return f"{ctx.settings!r}|{registry_fingerprint(load_registry())}|{mac}"


STAGING_DESCRIPTIONS: dict[str, str] = {
    "practitioners": "One row per Practitioner (newest version): id, active, gender; no names or contacts.",
    "practitioner_roles": "One row per PractitionerRole: practitioner, organization, role code.",
    "patients": (
        "One row per Patient (newest version): gender, birth year, age and age band at the reference date, "
        "managing organization; no names, identifiers, contacts or exact birth date."
    ),
    "encounters": (
        "One row per Encounter: patient, EpisodeOfCare, practitioner (primary performer, PractitionerRole "
        "resolved), clinic (serviceProvider), status, period, appointment."
    ),
    "episodes": "One row per EpisodeOfCare: patient, status, period, care manager, managing organization.",
    "appointments": "One row per Appointment: patient, practitioner, status, start.",
    "dispenses": (
        "One row per MedicationDispense: patient, medication code/display/key, whenHandedOver, daysSupply "
        "(days), status, authorizing MedicationRequest."
    ),
    "medication_requests": "One row per MedicationRequest: patient, medication, status, intent, authoredOn.",
    "sessions": (
        "One row per attended session (finished Encounter) with its session number within the treatment "
        "episode: the EpisodeOfCare when the Encounter names one, else a gap rule (new episode after more "
        "than episode_gap_days without a session)."
    ),
    "treatment_episodes": (
        "One row per treatment episode (EpisodeOfCare or gap-rule episode): patient, status, closed, period, "
        "therapist, clinic, sessions attended, age band at start."
    ),
    "session_measures": (
        "One row per session x instrument x scale: the valid, non-quarantined score of the newest response "
        "of each instrument at each attended session, with its rater."
    ),
}

MART_DESCRIPTIONS: dict[str, str] = {
    "alliance_sessions": (
        "One row per attended session: patient- and clinician-rated alliance (WAI-SR total, mean, goal, "
        "task, bond; SRS), rater discrepancy, low-alliance flags, rupture and repair flags, thresholds used. "
        "Keyed pseudonyms only."
    ),
    "episode_outcomes": (
        "One row per treatment episode: baseline and last PHQ-9/GAD-7/ORS, change, reliable improvement and "
        "deterioration, recovery, reliable recovery, response, remission, early and mean alliance by rater, "
        "ruptures, attendance, dropout, thresholds used."
    ),
    "adherence": (
        "One row per patient x adherence period (PQA measurement year by default): PDC and adherent flag, "
        "MARS and DAI-10 first/last/mean, attendance, patient- and clinician-rated alliance side by side."
    ),
    "therapist_alliance": (
        "One row per therapist x period: caseload, mean alliance, empirical-Bayes shrunken mean with its "
        "interval, ICC, funnel limits, outcome rates; rows under min_cell patients suppressed."
    ),
    "qi_monthly": (
        "One row per clinic x month (plus a practice row per month): measurement completion, mean alliance, "
        "low-alliance share, ruptures, recovery and reliable improvement, PDC adherence, attendance, "
        "data-quality pass rate; small cells suppressed with complements."
    ),
    "alliance_associations": (
        "One row per question x method: the clinic's own estimates (with CI, n and method) of alliance vs "
        "outcome, early alliance vs outcome, patient- vs clinician-rated alliance vs MARS, DAI-10 and PDC, "
        "rater agreement, therapist ICC, rupture repair vs outcome."
    ),
    "report_overview": (
        "One row per practice: patients, episodes and sessions, alliance measurement share, session "
        "date range, months, clinics and therapists with a reportable caseload (QI report overview); "
        "small counts suppressed, also against the monthly totals."
    ),
    "report_alliance_trajectory": (
        "One row per session number of a treatment episode, plus one over all sessions: patient- and "
        "clinician-rated sessions and mean alliance with the patient-rated interval (QI report "
        "trajectories); small counts suppressed with complements."
    ),
    "report_early_alliance_fit": (
        "One row per practice: episodes with early alliance and PHQ-9 improvement and the least-squares "
        "line between them (QI report scatter plot); suppressed under min_cell episodes."
    ),
    "report_therapist_funnel": (
        "One row per practice: the therapist_alliance period the QI report's funnel plot shows, its "
        "model values and the therapists drawn, hidden and outside the outer limits."
    ),
    "report_adherence_by_alliance_tertile": (
        "One row per adherence measure (PDC, MARS) x rater x third of alliance: patient-periods and mean "
        "adherence (QI report bar charts); a group's thirds suppressed together."
    ),
    "report_data_quality": (
        "One row per table x severity of the newest data-quality run, plus a total row: checks run, "
        "passed, failed, skipped, quarantined records, pass rate (QI report); small record counts "
        "suppressed."
    ),
}

# Staging tables each mart reads (besides other marts).
MART_STAGING_INPUTS: dict[str, tuple[str, ...]] = {
    "alliance_sessions": ("sessions", "session_measures", "treatment_episodes"),
    "episode_outcomes": ("treatment_episodes", "session_measures", "appointments", "patients"),
    "adherence": ("sessions", "session_measures", "dispenses", "appointments"),
    "therapist_alliance": (),
    "qi_monthly": (
        "sessions",
        "treatment_episodes",
        "appointments",
        "dispenses",
        "measure_scores",
        "questionnaire_answers",
    ),
    "alliance_associations": (),
    "report_overview": (),
    "report_alliance_trajectory": (),
    "report_early_alliance_fit": (),
    "report_therapist_funnel": (),
    "report_adherence_by_alliance_tertile": (),
    "report_data_quality": (),
}


def _staging_deps(name: str) -> list[dg.AssetKey]:
    if name == "session_measures":
        return [dg.AssetKey(["staging", "sessions"]), dg.AssetKey(["staging", "measure_scores"])]
    raw = [dg.AssetKey(["raw", t]) for t in RAW_INPUTS[name]]
    return [*raw, *(dg.AssetKey(["staging", t]) for t in STAGING_INPUTS[name])]


def build_staging_asset(name: str) -> dg.AssetsDefinition:
    """The asset `staging/<name>` for one clinical staging table."""

    @dg.asset(
        key=dg.AssetKey(["staging", name]),
        group_name="staging",
        deps=_staging_deps(name),
        kinds={"duckdb", "sql"},
        owners=["team:data-engineering"],
        tags={"layer": "staging"},
        description=f"{STAGING_DESCRIPTIONS[name]} (staging.{name}; rebuilt whole from its inputs)",
    )
    def _staging_asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        ctx = make_context(need_key=False)
        step = f"staging.{name}"
        with warehouse.connect() as con:
            raw = [f"raw.{t}" for t in RAW_INPUTS.get(name, ())]
            if name == "session_measures":
                raw.append("quality.quarantine")  # quarantined responses stay out of the marts
            upstream = _upstream_steps(
                ("sessions", "measure_scores") if name == "session_measures" else STAGING_INPUTS[name]
            )
            state = build_state.input_state(con, raw, upstream, _settings_text(ctx))
            if not is_full_refresh(context) and build_state.is_current(con, step, state, [step]):
                rows = con.execute(f"SELECT count(*) FROM {step}").fetchall()[0][0]  # noqa: S608 - constant
                context.log.info(f"{step}: inputs unchanged since the last build; kept {rows} rows")
                return dg.MaterializeResult(
                    metadata={"rows": rows, "skipped": True, "dagster/row_count": rows}
                )
            counts = build_staging(con, name, ctx)
            build_state.record(con, step, state, context.run_id)
        context.log.info(f"{step}: {counts}")
        return dg.MaterializeResult(
            metadata={**counts, "skipped": False, "dagster/row_count": counts["rows"]}
        )

    return _staging_asset


def build_mart_asset(name: str) -> dg.AssetsDefinition:
    """The asset `marts/<name>` for one mart."""
    deps = [
        *(dg.AssetKey(["staging", t]) for t in MART_STAGING_INPUTS[name]),
        *(dg.AssetKey(["marts", m]) for m in MART_INPUTS[name]),
    ]

    @dg.asset(
        key=dg.AssetKey(["marts", name]),
        group_name="marts",
        deps=deps,
        kinds={"duckdb"},
        owners=["team:data-engineering"],
        tags={"layer": "marts"},
        description=f"{MART_DESCRIPTIONS[name]} (marts.{name}; docs/marts.md)",
    )
    def _mart_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        ctx = make_context()
        step = f"marts.{name}"
        with warehouse.connect() as con:
            upstream = [
                *_upstream_steps(MART_STAGING_INPUTS[name]),
                *(f"marts.{m}" for m in MART_INPUTS[name]),
            ]
            # qi_monthly and report_data_quality report check results, so newer ones rebuild them.
            extra_tables = ["quality.check_results"] if name in ("qi_monthly", "report_data_quality") else []
            state = build_state.input_state(con, extra_tables, upstream, _settings_text(ctx))
            skipped = not is_full_refresh(context) and build_state.is_current(con, step, state, [step])
            if skipped:
                rows = con.execute(f"SELECT count(*) FROM {step}").fetchall()[0][0]  # noqa: S608 - constant
            else:
                rows = build_mart(con, name, ctx)
                build_state.record(con, step, state, context.run_id)
        context.log.info(f"{step}: {rows} rows" + (" (inputs unchanged: kept)" if skipped else ""))
        s = ctx.settings
        return dg.MaterializeResult(
            metadata={
                "skipped": skipped,
                "dagster/row_count": rows,
                "min_cell": s.min_cell,
                "pdc_threshold": s.pdc_threshold,
                "rupture_drop": s.rupture_drop,
                "episode_gap_days": s.episode_gap_days,
            }
        )

    return _mart_asset


staging_clinical_assets: list[dg.AssetsDefinition] = [build_staging_asset(n) for n in STAGING_BUILT]
mart_assets: list[dg.AssetsDefinition] = [build_mart_asset(n) for n in MART_NAMES]
