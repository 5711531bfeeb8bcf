"""Scoring layer: every current QuestionnaireResponse scored with the instrument registry."""

import dagster as dg

from assets.staging import ANSWERS_STEP, ITEMS_STEP
from fhir_mappings.registry import load_registry, registry_fingerprint
from fhir_mappings.scoring import build_measure_scores, reconcile
from pipelines import build_state
from pipelines.automation import is_full_refresh
from pipelines.resources.fhir_source import WarehouseResource

SCORES_STEP = "staging.measure_scores"
SCORE_TABLES = ["staging.measure_scores", "staging.unmapped_responses", "staging.excluded_responses"]


@dg.asset(
    key=dg.AssetKey(["staging", "measure_scores"]),
    group_name="scoring",
    deps=[
        dg.AssetKey(["staging", "questionnaire_answers"]),
        dg.AssetKey(["staging", "questionnaire_items"]),
    ],
    kinds={"duckdb", "sql"},
    owners=["team:data-engineering"],
    tags={"layer": "staging"},
    description=(
        "One row per scored QuestionnaireResponse x scale (staging.measure_scores): instrument, scale, "
        "score, items answered/expected, validity and reason, rater (from `source`), embedded total and "
        "mismatch, severity band, PHQ-9 item-9 risk flag and scoring provenance. Responses no instrument "
        "can score land in staging.unmapped_responses with the reason; entered-in-error, in-progress and "
        "stopped ones in staging.excluded_responses. Rebuilt whole from staging with the instrument "
        "registry (fhir_mappings/instruments/ plus the site folder)."
    ),
)
def staging_measure_scores(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    registry = load_registry()
    with warehouse.connect() as con:
        # Inputs: both staging steps, the registry files, and raw responses (withdrawn versions).
        state = build_state.input_state(
            con, ["raw.questionnaire_response"], [ANSWERS_STEP, ITEMS_STEP], registry_fingerprint(registry)
        )
        skipped = not is_full_refresh(context) and build_state.is_current(
            con, SCORES_STEP, state, SCORE_TABLES
        )
        if skipped:
            counts = {"forms": -1, **reconcile(con)}
            context.log.info("staging and registry unchanged since the last scoring: kept the scores")
        else:
            counts = build_measure_scores(con, registry)
            build_state.record(con, SCORES_STEP, state, context.run_id)
        by_instrument = con.execute(
            """SELECT instrument, count(*) FILTER (WHERE is_valid), count(*) FILTER (WHERE NOT is_valid)
               FROM staging.measure_scores WHERE scale = 'total' GROUP BY ALL ORDER BY 1"""
        ).fetchall()
    if counts["unaccounted"]:
        # Cannot happen by construction (every response takes exactly one route); fail loudly if it does.
        raise dg.Failure(f"scoring lost {counts['unaccounted']} responses: {counts}")
    context.log.info(f"scored {counts['scored_responses']} of {counts['responses']} responses: {counts}")
    return dg.MaterializeResult(
        metadata={
            **counts,
            "skipped": skipped,
            "dagster/row_count": counts["score_rows"],
            "registry": dg.MetadataValue.json(
                {k: f"{v.source_file} v{v.registry_version}" for k, v in registry.items()}
            ),
            "valid_totals_by_instrument": dg.MetadataValue.json(
                {name: {"valid": int(v), "invalid": int(i)} for name, v, i in by_instrument}
            ),
        }
    )


scoring_assets: list[dg.AssetsDefinition] = [staging_measure_scores]
