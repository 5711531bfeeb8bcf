"""The staging and scoring tables, declared once: what each holds, its key, the SQL that builds it,
and the three steps that write them (see `pipelines/catalog.py` for what a declaration means).

- `staging.questionnaire_answers` flattens the current version of every QuestionnaireResponse
  (`fhir_mappings/flatten.py`, `sql/answers/`);
- `staging.questionnaire_items` resolves every landed Questionnaire into items and answer scores
  (`fhir_mappings/questionnaires.py`, `sql/questionnaires/`);
- `staging.measure_scores` scores every current response with the instrument registry
  (`fhir_mappings/recognition.py`, `fhir_mappings/scoring.py`, `sql/scoring/`).

Step names are the names `ops.build_state` records in existing warehouses: keep them.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

from fhir_mappings import flatten, questionnaires, scoring
from fhir_mappings.registry import Instrument, load_registry, registry_fingerprint
from pipelines.catalog import StepSpec, TableSpec
from pipelines.sqlfiles import count_rows, query_sql


class ScoringLostResponses(RuntimeError):
    """Some current response is in none of measure_scores / unmapped / excluded (cannot happen by
    construction: every response takes exactly one route, so this is a bug, and the step fails)."""


def _with_row_counts(
    con: duckdb.DuckDBPyConnection, counts: Mapping[str, int], tables: tuple[TableSpec, ...]
) -> dict[str, int]:
    """A build's own counts plus `rows.<table>` for every table the step writes."""
    return {**counts, **{f"rows.{t.name}": count_rows(con, t.name) for t in tables}}


# --- staging.questionnaire_answers: responses flattened into answers --------------------------------

ANSWER_TABLES = (
    TableSpec(
        name="staging.questionnaire_answers",
        grain="One row per answer at any depth (item.item and answer.item) of a QuestionnaireResponse",
        key=("source", "response_id", "order_path", "answer_index"),
        description=(
            "Every answer of the newest version of each QuestionnaireResponse, typed by value[x], with "
            "its item's linkId, path and depth and the response's status, questionnaire canonical, "
            "subject, encounter, source and author references. Filled in chunks of responses."
        ),
        sql=flatten.ANSWERS_SQL,
    ),
    TableSpec(
        name="staging.questionnaire_responses",
        grain="One row per QuestionnaireResponse (the current version of each (source, id))",
        key=("source", "response_id"),
        description=(
            "The response's status, the questionnaire canonical it cites (split into url and version), "
            "and its subject, encounter, source and author references as sent."
        ),
        sql=flatten.RESPONSES_SQL,
    ),
)


def _build_answers(con: duckdb.DuckDBPyConnection, ctx: object) -> dict[str, int]:
    """Flatten the current responses (no context: the SQL files and the answers view are the definition)."""
    return _with_row_counts(con, flatten.build_questionnaire_answers(con), ANSWER_TABLES)


ANSWERS_STEP = StepSpec(
    name="staging.questionnaire_answers",
    layer="staging",
    tables=ANSWER_TABLES,
    inputs=("raw.questionnaire_response",),
    build=_build_answers,
    # the view compiled at run time is part of the definition: a changed view rebuilds the answers
    fingerprint_text=lambda ctx: flatten.answers_view_fingerprint(),
    description=(
        "One row per answer at any depth (item.item and answer.item) of the newest version of each "
        "QuestionnaireResponse, with the response's status, questionnaire canonical, subject, encounter, "
        "source and author references (staging.questionnaire_answers; one row per response in "
        "staging.questionnaire_responses). Rebuilt whole from raw, so re-running changes nothing."
    ),
    sql_files=(
        flatten.ANSWERS_VIEW,
        flatten.CURRENT_RESPONSES_SQL,
        flatten.RESPONSES_SQL,
        flatten.CREATE_ANSWERS_SQL,
        flatten.RESPONSE_CHUNK_SQL,
        flatten.ANSWERS_SQL,
        flatten.DROP_WORK_TABLES_SQL,
    ),
)


# --- staging.questionnaire_items: landed Questionnaires resolved into items and answer scores ------

QUESTIONNAIRE_TABLES = (
    TableSpec(
        name="staging.questionnaire_items",
        grain="One row per item (any depth, in form order) of the current version of each Questionnaire",
        key=("source", "questionnaire_id", "item_order"),
        description="The item's linkId, type and codes, with its Questionnaire's url and version.",
        sql=questionnaires.ITEMS_SQL,
    ),
    TableSpec(
        name="staging.questionnaires",
        grain="One row per Questionnaire (the current version of each (source, id))",
        key=("source", "questionnaire_id"),
        description=(
            "Canonical url and version, name, title, status, codes and identifiers ('system|value'): "
            "what instrument recognition matches against."
        ),
        sql=questionnaires.QUESTIONNAIRES_SQL,
    ),
    TableSpec(
        name="staging.questionnaire_answer_scores",
        grain="One row per scored answer option of an item of each current Questionnaire",
        key=("source", "questionnaire_id", "link_id", "system", "code", "value_integer", "score_source"),
        description=(
            "The option's score and its origin: ordinalValue, questionnaire-ordinalValue, itemWeight, or "
            "the same extensions on a contained ValueSet/CodeSystem ('valueset:' prefix)."
        ),
        sql=questionnaires.ANSWER_SCORES_SQL,
    ),
)


def _build_questionnaires(con: duckdb.DuckDBPyConnection, ctx: object) -> dict[str, int]:
    """Resolve the current Questionnaires into their three tables."""
    return _with_row_counts(con, questionnaires.build_questionnaire_tables(con), QUESTIONNAIRE_TABLES)


ITEMS_STEP = StepSpec(
    name="staging.questionnaire_items",
    layer="staging",
    tables=QUESTIONNAIRE_TABLES,
    inputs=("raw.questionnaire",),
    build=_build_questionnaires,
    description=(
        "One row per item (any depth) of the newest version of each Questionnaire with its codes "
        "(staging.questionnaire_items), and one row per scored answer option with the score's origin: "
        "ordinalValue, questionnaire-ordinalValue, itemWeight, or a contained ValueSet/CodeSystem "
        "(staging.questionnaire_answer_scores)."
    ),
    sql_files=(questionnaires.CURRENT_QUESTIONNAIRES_SQL,),
)


# --- staging.measure_scores: every current response scored with the instrument registry ------------

SCORE_TABLES = (
    TableSpec(
        name="staging.measure_scores",
        grain="One row per scored QuestionnaireResponse x scale of its instrument",
        key=("source", "response_id", "scale"),
        description=(
            "Instrument, scale, score, items answered/expected, validity and reason, rater (from "
            "`source`), embedded total and mismatch, severity band, PHQ-9 item-9 risk flag and scoring "
            "provenance (registry file and version, where each answer's score came from)."
        ),
        sql=scoring.MEASURE_SCORES_SQL,
    ),
    TableSpec(
        name="staging.unmapped_responses",
        grain="One row per current, finished QuestionnaireResponse no instrument can score",
        key=("source", "response_id"),
        description="The reason (unknown questionnaire, unmapped items, unscoreable answer) and its detail.",
        sql=scoring.UNMAPPED_RESPONSES_SQL,
    ),
    TableSpec(
        name="staging.excluded_responses",
        grain="One row per current QuestionnaireResponse whose status keeps it out of scoring",
        key=("source", "response_id"),
        description=(
            "entered-in-error (withdrawing the newest earlier completed or amended version, named in "
            "withdrawn_version), in-progress, stopped or another unscoreable status."
        ),
        sql=scoring.EXCLUDED_RESPONSES_SQL,
    ),
    TableSpec(
        name="staging.response_forms",
        grain="One row per (source, questionnaire value cited by a current response)",
        key=("source", "questionnaire"),
        description=(
            "How the cited questionnaire was resolved to a landed Questionnaire, which instrument was "
            "recognised and by what, or why none could be (the audit trail behind every score)."
        ),
        sql=scoring.RESPONSE_FORMS_SQL,
    ),
    TableSpec(
        name="staging.form_item_map",
        grain="One row per (source, cited questionnaire, linkId) mapped onto the form's instrument",
        key=("source", "questionnaire", "link_id"),
        description="The instrument item number, the embedded total or an ignored item, and what mapped it.",
        sql=scoring.FORM_ITEM_MAP_SQL,
    ),
    TableSpec(
        name="staging.instrument_scales",
        grain="One row per instrument x scale of the instrument registry",
        key=("instrument", "scale"),
        description=(
            "The scale's rule and range, the item range, the missing-item rule, the default rater and "
            "the registry file and version (for checks and BI)."
        ),
        sql=scoring.INSTRUMENT_SCALES_SQL,
    ),
)


def _build_scores(con: duckdb.DuckDBPyConnection, registry: Mapping[str, Instrument]) -> dict[str, int]:
    """Score every current response; fail if the reconciliation finds a response in no table."""
    counts = scoring.build_measure_scores(con, registry)
    if counts["unaccounted"]:
        raise ScoringLostResponses(f"scoring lost {counts['unaccounted']} responses: {counts}")
    return _with_row_counts(con, counts, SCORE_TABLES)


def _scores_report(con: duckdb.DuckDBPyConnection, registry: Mapping[str, Instrument]) -> dict[str, object]:
    """What the UI shows beside the scores on every run (built or kept): the reconciliation of
    responses, the registry files used, and valid / invalid totals by instrument."""
    by_instrument = query_sql(con, scoring.SQL_DIR / "totals_by_instrument.sql")
    return {
        **scoring.reconcile(con),  # the same counts a build reports, also when the step was kept
        "registry": {k: f"{v.source_file} v{v.registry_version}" for k, v in registry.items()},
        "valid_totals_by_instrument": {
            str(row[0]): {"valid": int(str(row[1])), "invalid": int(str(row[2]))} for row in by_instrument
        },
    }


SCORES_STEP = StepSpec(
    name="staging.measure_scores",
    layer="staging",
    tables=SCORE_TABLES,
    # The flattened responses and answers, the resolved Questionnaires, and raw responses (the
    # withdrawn version of an entered-in-error response is an earlier version, only in raw).
    inputs=(
        "staging.questionnaire_responses",
        "staging.questionnaire_answers",
        "staging.questionnaires",
        "staging.questionnaire_items",
        "staging.questionnaire_answer_scores",
        "raw.questionnaire_response",
    ),
    build=_build_scores,
    report=_scores_report,
    context=load_registry,
    fingerprint_text=registry_fingerprint,
    description=(
        "One row per scored QuestionnaireResponse x scale (staging.measure_scores): instrument, scale, "
        "score, items answered/expected, validity and reason, rater (from `source`), embedded total and "
        "mismatch, severity band, PHQ-9 item-9 risk flag and scoring provenance. Responses no instrument "
        "can score land in staging.unmapped_responses with the reason; entered-in-error, in-progress and "
        "stopped ones in staging.excluded_responses. Rebuilt whole from staging with the instrument "
        "registry (fhir_mappings/instruments/ plus the site folder)."
    ),
    sql_files=(
        scoring.CITED_QUESTIONNAIRES_SQL,
        scoring.LANDED_QUESTIONNAIRES_SQL,
        scoring.LANDED_ITEMS_SQL,
        scoring.REGISTRY_TABLES_SQL,
        *scoring.SCORING_SQL,
        scoring.DROP_WORK_TABLES_SQL,
        scoring.RECONCILE_SQL,
        scoring.SQL_DIR / "totals_by_instrument.sql",
    ),
)

STEPS: tuple[StepSpec, ...] = (ANSWERS_STEP, ITEMS_STEP, SCORES_STEP)
