"""Staging layer: flattened QuestionnaireResponse answers (set-based SQL in fhir_mappings/)."""

import dagster as dg

from fhir_mappings.flatten import build_questionnaire_answers
from fhir_mappings.questionnaires import build_questionnaire_tables
from pipelines.resources.fhir_source import WarehouseResource


@dg.asset(
    key=dg.AssetKey(["staging", "questionnaire_answers"]),
    group_name="staging",
    deps=[dg.AssetKey(["raw", "questionnaire_response"])],
    kinds={"duckdb", "sql"},
    owners=["team:data-engineering"],
    tags={"layer": "staging"},
    description=(
        "One row per answer at any depth (item.item and answer.item) of the newest version of each "
        "QuestionnaireResponse, with the response's status, questionnaire canonical, subject, encounter, "
        "source and author references (staging.questionnaire_answers; one row per response in "
        "staging.questionnaire_responses). Rebuilt whole from raw, so re-running changes nothing."
    ),
)
def staging_questionnaire_answers(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        counts = build_questionnaire_answers(con)
    context.log.info(f"flattened {counts['responses']} responses into {counts['answers']} answers")
    return dg.MaterializeResult(metadata={**counts, "dagster/row_count": counts["answers"]})


@dg.asset(
    key=dg.AssetKey(["staging", "questionnaire_items"]),
    group_name="staging",
    deps=[dg.AssetKey(["raw", "questionnaire"])],
    kinds={"duckdb"},
    owners=["team:data-engineering"],
    tags={"layer": "staging"},
    description=(
        "One row per item (any depth) of the newest version of each Questionnaire with its codes "
        "(staging.questionnaire_items), and one row per scored answer option with the score's origin: "
        "ordinalValue, questionnaire-ordinalValue, itemWeight, or a contained ValueSet/CodeSystem "
        "(staging.questionnaire_answer_scores)."
    ),
)
def staging_questionnaire_items(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    with warehouse.connect() as con:
        counts = build_questionnaire_tables(con)
    context.log.info(f"resolved {counts['questionnaires']} questionnaires: {counts}")
    return dg.MaterializeResult(metadata={**counts, "dagster/row_count": counts["items"]})


staging_assets: list[dg.AssetsDefinition] = [staging_questionnaire_answers, staging_questionnaire_items]
