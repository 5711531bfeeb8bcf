"""Staging layer: flattened QuestionnaireResponse answers (set-based SQL in fhir_mappings/)."""

import dagster as dg
import duckdb

from fhir_mappings.flatten import build_questionnaire_answers
from fhir_mappings.questionnaires import build_questionnaire_tables
from pipelines import build_state
from pipelines.automation import is_full_refresh
from pipelines.resources.fhir_source import WarehouseResource

ANSWERS_STEP = "staging.questionnaire_answers"
ITEMS_STEP = "staging.questionnaire_items"


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
        state = build_state.input_state(con, ["raw.questionnaire_response"])
        outputs = ["staging.questionnaire_responses", "staging.questionnaire_answers"]
        if not is_full_refresh(context) and build_state.is_current(con, ANSWERS_STEP, state, outputs):
            counts = _counts(con, responses=outputs[0], answers=outputs[1])
            context.log.info(f"no new response versions since the last build: kept {counts}")
            return dg.MaterializeResult(
                metadata={**counts, "skipped": True, "dagster/row_count": counts["answers"]}
            )
        counts = build_questionnaire_answers(con)
        build_state.record(con, ANSWERS_STEP, state, context.run_id)
    context.log.info(f"flattened {counts['responses']} responses into {counts['answers']} answers")
    return dg.MaterializeResult(metadata={**counts, "skipped": False, "dagster/row_count": counts["answers"]})


def _counts(con: duckdb.DuckDBPyConnection, **tables: str) -> dict[str, int]:
    """Row counts of existing tables, by the given names."""
    return {
        name: int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])  # noqa: S608 - constants
        for name, table in tables.items()
    }


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
        state = build_state.input_state(con, ["raw.questionnaire"])
        outputs = [
            "staging.questionnaires",
            "staging.questionnaire_items",
            "staging.questionnaire_answer_scores",
        ]
        if not is_full_refresh(context) and build_state.is_current(con, ITEMS_STEP, state, outputs):
            counts = _counts(con, questionnaires=outputs[0], items=outputs[1], answer_scores=outputs[2])
            context.log.info(f"no new Questionnaire versions since the last build: kept {counts}")
            return dg.MaterializeResult(
                metadata={**counts, "skipped": True, "dagster/row_count": counts["items"]}
            )
        counts = build_questionnaire_tables(con)
        build_state.record(con, ITEMS_STEP, state, context.run_id)
    context.log.info(f"resolved {counts['questionnaires']} questionnaires: {counts}")
    return dg.MaterializeResult(metadata={**counts, "skipped": False, "dagster/row_count": counts["items"]})


staging_assets: list[dg.AssetsDefinition] = [staging_questionnaire_answers, staging_questionnaire_items]
