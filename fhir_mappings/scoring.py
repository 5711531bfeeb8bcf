"""Score every current QuestionnaireResponse with the instrument registry, set-based in DuckDB.

Input: `staging.questionnaire_responses` / `staging.questionnaire_answers` (fhir_mappings/flatten.py)
and `staging.questionnaires` / `staging.questionnaire_items` / `staging.questionnaire_answer_scores`
(fhir_mappings/questionnaires.py). Output, rebuilt whole each time (so re-running changes nothing):

- `staging.measure_scores`: one row per scored response x scale (valid or not, with the reason);
- `staging.unmapped_responses`: responses no instrument can score, with the reason;
- `staging.excluded_responses`: responses whose status keeps them out (entered-in-error withdraws an
  earlier score; in-progress and stopped are not finished);
- `staging.response_forms`, `staging.form_item_map`: how each cited questionnaire was resolved,
  recognised and mapped (the audit trail behind every score);
- `staging.instrument_scales`: the registry's scales and ranges, for checks and BI.

Every current response lands in exactly one of measure_scores / unmapped_responses /
excluded_responses (`reconcile()` proves it). Python touches only forms and registry rows (tens);
responses and answers never leave SQL. The SQL is `fhir_mappings/sql/scoring/`, one file per step
(`SCORING_SQL` gives the order); `fhir_mappings/tables.py` declares the tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from fhir_mappings.recognition import questionnaire_defs, resolve_forms
from fhir_mappings.registry import Instrument, load_registry
from pipelines.sqlfiles import install_shared_macros, query_sql, run_sql
from pipelines.warehouse import large_step_memory_limit, stage_memory_limit

SCORED_STATUSES = ("completed", "amended")

SQL_DIR = Path(__file__).resolve().parent / "sql" / "scoring"
CITED_QUESTIONNAIRES_SQL = SQL_DIR / "cited_questionnaires.sql"
LANDED_QUESTIONNAIRES_SQL = SQL_DIR / "landed_questionnaires.sql"
LANDED_ITEMS_SQL = SQL_DIR / "landed_questionnaire_items.sql"
RESPONSE_FORMS_SQL = SQL_DIR / "response_forms.sql"
FORM_ITEM_MAP_SQL = SQL_DIR / "form_item_map.sql"
REGISTRY_TABLES_SQL = SQL_DIR / "registry_tables.sql"
DROP_WORK_TABLES_SQL = SQL_DIR / "drop_work_tables.sql"
MEASURE_SCORES_SQL = SQL_DIR / "measure_scores.sql"
UNMAPPED_RESPONSES_SQL = SQL_DIR / "unmapped_responses.sql"
EXCLUDED_RESPONSES_SQL = SQL_DIR / "excluded_responses.sql"
INSTRUMENT_SCALES_SQL = SQL_DIR / "instrument_scales.sql"
RECONCILE_SQL = SQL_DIR / "reconcile.sql"
# The scoring SQL, step by step, after the form tables and the registry tables exist. The first five
# write temporary work tables; the rest write the staging tables.
SCORING_SQL = (
    SQL_DIR / "responses_with_forms.sql",
    SQL_DIR / "form_answer_scores.sql",
    SQL_DIR / "answer_scores.sql",
    SQL_DIR / "response_routes.sql",
    SQL_DIR / "item_scores.sql",
    MEASURE_SCORES_SQL,
    UNMAPPED_RESPONSES_SQL,
    EXCLUDED_RESPONSES_SQL,
    INSTRUMENT_SCALES_SQL,
)


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def _registry_frames(registry: Mapping[str, Instrument]) -> dict[str, pd.DataFrame]:
    """The registry as small relational tables the scoring SQL joins against, by the fixed name each is
    registered under (`sql/scoring/registry_tables.sql` copies each into a temporary table)."""
    inst, scales, items, answers, item_scores, bands = [], [], [], [], [], []
    for key, ins in registry.items():
        risk = ins.thresholds.get("risk_item") or {}
        inst.append(
            {
                "instrument": key,
                "domain": ins.domain,
                "default_rater": ins.default_rater,
                "item_lo": float(ins.item_range[0]),
                "item_hi": float(ins.item_range[1]),
                "missing_rule": ins.missing.rule,
                "max_missing": ins.missing.max_missing if ins.missing.rule == "prorate" else 0,
                "prorate_round": ins.missing.round,
                "registry_file": ins.source_file,
                "registry_version": ins.registry_version,
                "risk_item": risk.get("item"),
                "risk_above": risk.get("above"),
            }
        )
        for name, scale in ins.scales.items():
            for number in scale.items:
                scales.append(
                    {
                        "instrument": key,
                        "scale": name,
                        "rule": scale.rule,
                        "scale_lo": float(scale.range[0]),
                        "scale_hi": float(scale.range[1]),
                        "item_number": number,
                    }
                )
        for item in ins.items:
            items.append(
                {"instrument": key, "item_number": item.number, "reverse": item.number in ins.reverse_keyed}
            )
            for answer_key, score in (item.scores or {}).items():
                item_scores.append(
                    {"instrument": key, "item_number": item.number, "key": answer_key, "score": float(score)}
                )
        for a in ins.answer_scores:
            answers.append({"instrument": key, "code": a.code, "score": float(a.score)})
        ordered = sorted(ins.thresholds.get("bands") or [], key=lambda b: float(b["min"]))
        for i, band in enumerate(ordered):
            upper = float(ordered[i + 1]["min"]) if i + 1 < len(ordered) else float("inf")
            bands.append(
                {"instrument": key, "band": band["name"], "lo": float(band["min"]), "hi_excl": upper}
            )
    return {
        "registry_instruments_frame": _frame(
            inst,
            [
                "instrument",
                "domain",
                "default_rater",
                "item_lo",
                "item_hi",
                "missing_rule",
                "max_missing",
                "prorate_round",
                "registry_file",
                "registry_version",
                "risk_item",
                "risk_above",
            ],
        ),
        "registry_scale_items_frame": _frame(
            scales, ["instrument", "scale", "rule", "scale_lo", "scale_hi", "item_number"]
        ),
        "registry_items_frame": _frame(items, ["instrument", "item_number", "reverse"]),
        "registry_answer_scores_frame": _frame(answers, ["instrument", "code", "score"]),
        "registry_item_scores_frame": _frame(item_scores, ["instrument", "item_number", "key", "score"]),
        "registry_severity_bands_frame": _frame(bands, ["instrument", "band", "lo", "hi_excl"]),
    }


# Columns of the recognition queries and of the two form tables' registered rows.
LANDED_QUESTIONNAIRE_COLUMNS = (
    "source",
    "questionnaire_id",
    "url",
    "version",
    "codes",
    "identifiers",
    "last_updated",
)
LANDED_ITEM_COLUMNS = ("source", "questionnaire_id", "link_id", "item_order", "type", "codes")
RESPONSE_FORM_COLUMNS = [
    "source",
    "questionnaire",
    "questionnaire_source",
    "questionnaire_id",
    "questionnaire_version",
    "resolution",
    "instrument",
    "recognised_by",
    "reason",
    "detail",
]
FORM_ITEM_MAP_COLUMNS = [
    "source",
    "questionnaire",
    "instrument",
    "link_id",
    "role",
    "item_number",
    "mapped_by",
]


def build_form_tables(con: duckdb.DuckDBPyConnection, registry: Mapping[str, Instrument]) -> int:
    """(Re)build `staging.response_forms` and `staging.form_item_map` for every cited questionnaire."""
    cited = query_sql(con, CITED_QUESTIONNAIRES_SQL)
    defs = questionnaire_defs(
        _records(query_sql(con, LANDED_QUESTIONNAIRES_SQL), LANDED_QUESTIONNAIRE_COLUMNS),
        _records(query_sql(con, LANDED_ITEMS_SQL), LANDED_ITEM_COLUMNS),
    )
    resolutions = resolve_forms(((str(s), str(q)) for s, q in cited), defs, registry)
    forms = [
        {
            "source": r.source,
            "questionnaire": r.questionnaire,
            "questionnaire_source": r.questionnaire_source,
            "questionnaire_id": r.questionnaire_id,
            "questionnaire_version": r.questionnaire_version,
            "resolution": r.resolution,
            "instrument": r.instrument,
            "recognised_by": r.recognised_by,
            "reason": r.reason,
            "detail": r.detail,
        }
        for r in resolutions
    ]
    maps = [
        {
            "source": r.source,
            "questionnaire": r.questionnaire,
            "instrument": r.instrument,
            "link_id": m.link_id,
            "role": m.role,
            "item_number": m.item_number,
            "mapped_by": m.mapped_by,
        }
        for r in resolutions
        for m in r.items
    ]
    # Registered under the fixed names the two SQL files read.
    con.register("response_forms_frame", _frame(forms, RESPONSE_FORM_COLUMNS))
    con.register("form_item_map_frame", _frame(maps, FORM_ITEM_MAP_COLUMNS))
    try:
        run_sql(con, RESPONSE_FORMS_SQL)
        run_sql(con, FORM_ITEM_MAP_SQL)
    finally:
        con.unregister("response_forms_frame")
        con.unregister("form_item_map_frame")
    return len(forms)


def _records(rows: Sequence[tuple[object, ...]], columns: Sequence[str]) -> list[dict[str, object]]:
    """Query rows as dicts, by the column names of the SELECT they come from (same order)."""
    return [dict(zip(columns, row, strict=True)) for row in rows]


def build_measure_scores(
    con: duckdb.DuckDBPyConnection, registry: Mapping[str, Instrument] | None = None
) -> dict[str, int]:
    """(Re)build the scoring tables from staging; returns row counts and the reconciliation.

    Needs the staging tables of flatten.py and questionnaires.py. Rebuilt whole (CREATE OR REPLACE),
    so running it twice gives identical tables. The SQL is `fhir_mappings/sql/scoring/*.sql`, run in
    the order of `SCORING_SQL` over the form tables and the registry's temporary tables.
    """
    reg = registry if registry is not None else load_registry()
    install_shared_macros(con)
    forms = build_form_tables(con, reg)
    frames = _registry_frames(reg)
    try:
        for name, frame in frames.items():
            con.register(name, frame)
        try:
            run_sql(con, REGISTRY_TABLES_SQL)
        finally:
            for name in frames:
                con.unregister(name)
        with stage_memory_limit(con, large_step_memory_limit()):
            for path in SCORING_SQL:
                run_sql(con, path)
    finally:
        # Temporary tables live as long as the connection: drop them even after a failure.
        run_sql(con, DROP_WORK_TABLES_SQL)
    return {"forms": forms, **reconcile(con)}


def reconcile(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Responses in staging vs scored + unmapped + excluded (each response in exactly one)."""
    row = query_sql(con, RECONCILE_SQL)[0]
    responses, scored, unmapped, excluded, rows, valid = (int(x) for x in row)  # type: ignore[call-overload]
    return {
        "responses": responses,
        "scored_responses": scored,
        "unmapped_responses": unmapped,
        "excluded_responses": excluded,
        "unaccounted": responses - scored - unmapped - excluded,
        "score_rows": rows,
        "valid_score_rows": valid,
    }
