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
responses and answers never leave SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pandas as pd

from fhir_mappings.recognition import questionnaire_defs, resolve_forms
from fhir_mappings.registry import Instrument, load_registry

SCORED_STATUSES = ("completed", "amended")

# A reference's 'Type/id' whatever its form: relative, absolute, or versioned (/_history/n).
_REF = r"([A-Za-z]+/[^/]+?)(?:/_history/[^/]+)?$"
_RATER_TYPE = r"(?:^|/)(Patient|Practitioner|PractitionerRole|RelatedPerson)/[^/]+(?:/_history/[^/]+)?$"


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def _registry_frames(registry: Mapping[str, Instrument]) -> dict[str, pd.DataFrame]:
    """The registry as small relational tables the scoring SQL joins against."""
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
        "_reg_inst": _frame(
            inst,
            [
                "instrument",
                "domain",
                "default_rater",
                "item_lo",
                "item_hi",
                "missing_rule",
                "max_missing",
                "registry_file",
                "registry_version",
                "risk_item",
                "risk_above",
            ],
        ),
        "_reg_scale": _frame(scales, ["instrument", "scale", "rule", "scale_lo", "scale_hi", "item_number"]),
        "_reg_item": _frame(items, ["instrument", "item_number", "reverse"]),
        "_reg_answer": _frame(answers, ["instrument", "code", "score"]),
        "_reg_item_score": _frame(item_scores, ["instrument", "item_number", "key", "score"]),
        "_reg_band": _frame(bands, ["instrument", "band", "lo", "hi_excl"]),
    }


def build_form_tables(con: duckdb.DuckDBPyConnection, registry: Mapping[str, Instrument]) -> int:
    """(Re)build `staging.response_forms` and `staging.form_item_map` for every cited questionnaire."""
    cited = con.execute(
        "SELECT DISTINCT source, coalesce(questionnaire, '') FROM staging.questionnaire_responses"
    ).fetchall()
    forms_df = con.execute(
        """SELECT source, questionnaire_id, url, version, codes, identifiers,
                  last_updated::VARCHAR AS last_updated
           FROM staging.questionnaires"""
    ).df()
    items_df = con.execute(
        "SELECT source, questionnaire_id, link_id, item_order, type, codes FROM staging.questionnaire_items"
    ).df()
    defs = questionnaire_defs(
        [_row(r) for r in forms_df.to_dict("records")], [_row(r) for r in items_df.to_dict("records")]
    )
    resolutions = resolve_forms(((s, q) for s, q in cited), defs, registry)
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
    form_cols = [
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
    map_cols = ["source", "questionnaire", "instrument", "link_id", "role", "item_number", "mapped_by"]
    con.register("_forms_df", _frame(forms, form_cols))
    con.register("_maps_df", _frame(maps, map_cols))
    try:
        con.execute(
            "CREATE OR REPLACE TABLE staging.response_forms AS SELECT "  # noqa: S608 - constant names
            + ", ".join(f"{c}::VARCHAR AS {c}" for c in form_cols)
            + " FROM _forms_df"
        )
        con.execute(
            """CREATE OR REPLACE TABLE staging.form_item_map AS
               SELECT source::VARCHAR AS source, questionnaire::VARCHAR AS questionnaire,
                      instrument::VARCHAR AS instrument, link_id::VARCHAR AS link_id, role::VARCHAR AS role,
                      item_number::INTEGER AS item_number, mapped_by::VARCHAR AS mapped_by
               FROM _maps_df"""
        )
    finally:
        con.unregister("_forms_df")
        con.unregister("_maps_df")
    return len(forms)


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    """pandas record -> plain values (NaN/NaT become None, numpy arrays become lists)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        elif v is not None and not isinstance(v, list | str) and pd.isna(v):
            v = None
        out[k] = v
    return out


# --- The scoring SQL, step by step (temp tables; the registry tables are registered as _reg_*) -----

_RESPONSES = f"""
CREATE OR REPLACE TEMP TABLE _sc_resp AS
SELECT r.source, r.response_id, r.version_id, r.status, r.questionnaire,
       f.questionnaire_id, f.instrument, f.reason AS form_reason, f.detail AS form_detail,
       coalesce(nullif(regexp_extract(r.subject_ref, '{_REF}', 1), ''), r.subject_ref) AS patient_ref,
       coalesce(nullif(regexp_extract(r.encounter_ref, '{_REF}', 1), ''), r.encounter_ref) AS encounter_ref,
       r.source_ref, r.author_ref, r.authored_at,
       nullif(regexp_extract(r.source_ref, '{_RATER_TYPE}', 1), '') AS source_type,
       nullif(regexp_extract(r.author_ref, '{_RATER_TYPE}', 1), '') AS author_type
FROM staging.questionnaire_responses r
LEFT JOIN staging.response_forms f
       ON f.source = r.source AND f.questionnaire = coalesce(r.questionnaire, '')
"""  # noqa: S608 - the interpolated regexes are module constants

# Form-declared answer scores, per cited form: exact (system + code), system-insensitive (real forms
# send LOINC LA codes with and without a system), and integer-valued options. A code given two
# different scores by one form item is ambiguous and scores nothing.
_FORM_SCORES = """
CREATE OR REPLACE TEMP TABLE _fs AS
SELECT f.source, f.questionnaire, s.link_id, s.system, s.code, s.value_integer, s.score, s.score_source
FROM staging.response_forms f
JOIN staging.questionnaire_answer_scores s
  ON s.source = f.questionnaire_source AND s.questionnaire_id = f.questionnaire_id;
CREATE OR REPLACE TEMP TABLE _fs_exact AS
SELECT source, questionnaire, link_id, system, code,
       CASE WHEN count(DISTINCT score) = 1 THEN min(score) END AS score, min(score_source) AS score_source
FROM _fs WHERE code IS NOT NULL AND system IS NOT NULL GROUP BY ALL;
CREATE OR REPLACE TEMP TABLE _fs_loose AS
SELECT source, questionnaire, link_id, code,
       CASE WHEN count(DISTINCT score) = 1 THEN min(score) END AS score, min(score_source) AS score_source
FROM _fs WHERE code IS NOT NULL GROUP BY ALL;
CREATE OR REPLACE TEMP TABLE _fs_int AS
SELECT source, questionnaire, link_id, value_integer,
       CASE WHEN count(DISTINCT score) = 1 THEN min(score) END AS score, min(score_source) AS score_source
FROM _fs WHERE value_integer IS NOT NULL GROUP BY ALL;
"""

# One row per answer of a scoreable response, with its instrument role and score. Score order: the
# form's own scores, then the registry's per-item scores (yes/no, true/false items), then the
# registry's answer table (LOINC LA codes), then a plain numeric answer.
_ANSWERS = """
CREATE OR REPLACE TEMP TABLE _sc_ans AS
WITH scoreable AS (
    SELECT source, response_id, instrument FROM _sc_resp
    WHERE status IN ('completed', 'amended') AND instrument IS NOT NULL
)
SELECT a.source, a.response_id, r.instrument, a.link_id, m.role, m.item_number, a.answer_type,
       CASE WHEN m.role = 'item' THEN coalesce(
           e.score, l.score, i.score, ris.score, ras.score,
           CASE WHEN a.answer_type IN ('integer', 'decimal', 'quantity')
                THEN coalesce(a.value_integer::DOUBLE, a.value_decimal, a.quantity_value) END) END AS score,
       CASE WHEN m.role <> 'item' THEN NULL
            WHEN e.score IS NOT NULL THEN e.score_source
            WHEN l.score IS NOT NULL THEN l.score_source
            WHEN i.score IS NOT NULL THEN i.score_source
            WHEN ris.score IS NOT NULL THEN 'registry:item_scores'
            WHEN ras.score IS NOT NULL THEN 'registry:answer_scores'
            WHEN a.answer_type IN ('integer', 'decimal', 'quantity')
                 AND coalesce(a.value_integer::DOUBLE, a.value_decimal, a.quantity_value) IS NOT NULL
                THEN 'answer_value'
       END AS score_source,
       coalesce(a.value_decimal, a.value_integer::DOUBLE, a.quantity_value,
                TRY_CAST(a.value_string AS DOUBLE)) AS numeric_value,
       coalesce(a.coding_code, a.value_boolean::VARCHAR, a.value_integer::VARCHAR, a.value_decimal::VARCHAR,
                a.quantity_value::VARCHAR, a.value_string, a.answer_type) AS answer_text
FROM staging.questionnaire_answers a
JOIN scoreable r ON r.source = a.source AND r.response_id = a.response_id
LEFT JOIN staging.form_item_map m
       ON m.source = a.source AND m.questionnaire = coalesce(a.questionnaire, '') AND m.link_id = a.link_id
LEFT JOIN _fs_exact e
       ON e.source = a.source AND e.questionnaire = coalesce(a.questionnaire, '') AND e.link_id = a.link_id
      AND e.system = a.coding_system AND e.code = a.coding_code
LEFT JOIN _fs_loose l
       ON l.source = a.source AND l.questionnaire = coalesce(a.questionnaire, '') AND l.link_id = a.link_id
      AND l.code = a.coding_code
LEFT JOIN _fs_int i
       ON i.source = a.source AND i.questionnaire = coalesce(a.questionnaire, '') AND i.link_id = a.link_id
      AND i.value_integer = a.value_integer AND a.answer_type = 'integer'
LEFT JOIN _reg_item_score ris
       ON ris.instrument = r.instrument AND ris.item_number = m.item_number
      AND ris.key = coalesce(a.coding_code, lower(a.value_boolean::VARCHAR))
LEFT JOIN _reg_answer ras ON ras.instrument = r.instrument AND ras.code = a.coding_code
"""

# Per response: which path it takes. Status first, then the form, then its answers.
_ROUTES = """
CREATE OR REPLACE TEMP TABLE _sc_route AS
WITH per_response AS (
    SELECT source, response_id,
           count(*) AS answers,
           count(*) FILTER (WHERE role = 'item') AS item_answers,
           count(*) FILTER (WHERE role IS NULL) AS unmapped_answers,
           count(*) FILTER (WHERE role = 'item' AND score IS NULL) AS unscoreable,
           string_agg(DISTINCT link_id, ', ' ORDER BY link_id) FILTER (WHERE role IS NULL) AS unmapped_links,
           string_agg('item ' || item_number || ' (' || link_id || '): ' || answer_text, '; '
                      ORDER BY item_number, link_id) FILTER (WHERE role = 'item' AND score IS NULL)
               AS unscoreable_detail,
           max(numeric_value) FILTER (WHERE role = 'total') AS reported_total,
           string_agg(DISTINCT score_source, ',' ORDER BY score_source) AS score_sources
    FROM _sc_ans GROUP BY ALL
)
SELECT r.*, coalesce(p.answers, 0) AS answers, coalesce(p.unmapped_answers, 0) AS unmapped_answers,
       p.reported_total, p.score_sources,
       CASE
           WHEN r.status = 'entered-in-error' THEN 'excluded'
           WHEN r.status IS DISTINCT FROM 'completed' AND r.status IS DISTINCT FROM 'amended' THEN 'excluded'
           WHEN r.instrument IS NULL THEN 'unmapped'
           WHEN coalesce(p.answers, 0) > 0 AND p.item_answers = 0 THEN 'unmapped'
           WHEN coalesce(p.unscoreable, 0) > 0 THEN 'unmapped'
           ELSE 'scored'
       END AS route,
       CASE
           WHEN r.status = 'entered-in-error' THEN 'withdrawn: entered-in-error'
           WHEN r.status IN ('in-progress', 'stopped') THEN 'not finished: ' || r.status
           WHEN r.status IS DISTINCT FROM 'completed' AND r.status IS DISTINCT FROM 'amended'
               THEN 'status not scoreable: ' || coalesce(r.status, '(none)')
           WHEN r.instrument IS NULL THEN r.form_reason
           WHEN coalesce(p.answers, 0) > 0 AND p.item_answers = 0 THEN 'unmapped items'
           WHEN coalesce(p.unscoreable, 0) > 0 THEN 'unscoreable answer'
       END AS route_reason,
       CASE
           WHEN r.status = 'entered-in-error'
               THEN 'the newest version marks the response entered-in-error; any earlier score is withdrawn'
           WHEN r.status IN ('in-progress', 'stopped') THEN 'only completed and amended responses are scored'
           WHEN r.instrument IS NULL THEN r.form_detail
           WHEN coalesce(p.answers, 0) > 0 AND p.item_answers = 0
               THEN 'no answered linkId maps to an item of ' || r.instrument || ': ' || p.unmapped_links
           WHEN coalesce(p.unscoreable, 0) > 0
               THEN 'no score in the form or the registry for ' || p.unscoreable_detail
       END AS route_detail
FROM _sc_resp r LEFT JOIN per_response p USING (source, response_id)
"""

_ITEMS = """
CREATE OR REPLACE TEMP TABLE _sc_item AS
SELECT a.source, a.response_id, a.instrument, a.item_number, count(*) AS n_answers,
       CASE WHEN ri.reverse THEN ins.item_lo + ins.item_hi - min(a.score) ELSE min(a.score) END AS score,
       min(a.score) < ins.item_lo OR min(a.score) > ins.item_hi
           OR max(a.score) < ins.item_lo OR max(a.score) > ins.item_hi AS out_of_range,
       min(a.score) AS raw_score
FROM _sc_ans a
JOIN _sc_route r ON r.source = a.source AND r.response_id = a.response_id AND r.route = 'scored'
JOIN _reg_inst ins ON ins.instrument = a.instrument
LEFT JOIN _reg_item ri ON ri.instrument = a.instrument AND ri.item_number = a.item_number
WHERE a.role = 'item'
GROUP BY a.source, a.response_id, a.instrument, a.item_number, ri.reverse, ins.item_lo, ins.item_hi
"""

_SCALES = f"""
CREATE OR REPLACE TABLE staging.measure_scores AS
WITH scales AS (
    SELECT r.source, r.response_id, s.scale, any_value(s.rule) AS rule,
           any_value(s.scale_lo) AS scale_lo, any_value(s.scale_hi) AS scale_hi,
           count(*)::INTEGER AS items_expected,
           count(i.score)::INTEGER AS items_answered,
           sum(i.score) AS raw_sum, avg(i.score) AS raw_mean,
           string_agg(s.item_number::VARCHAR, ', ' ORDER BY s.item_number) FILTER (WHERE i.n_answers > 1)
               AS multi_items,
           string_agg('item ' || s.item_number || ' = ' || printf('%g', i.raw_score), ', '
                      ORDER BY s.item_number)
               FILTER (WHERE i.out_of_range) AS out_of_range
    FROM _sc_route r
    JOIN _reg_scale s ON s.instrument = r.instrument
    LEFT JOIN _sc_item i
           ON i.source = r.source AND i.response_id = r.response_id AND i.item_number = s.item_number
    WHERE r.route = 'scored'
    GROUP BY r.source, r.response_id, s.scale
),
risk AS (
    SELECT i.source, i.response_id, i.score > ins.risk_above AS risk_flag
    FROM _sc_item i JOIN _reg_inst ins ON ins.instrument = i.instrument AND i.item_number = ins.risk_item
),
scored AS (
    SELECT s.*, r.* EXCLUDE (source, response_id), ins.* EXCLUDE (instrument),
           s.items_expected - s.items_answered AS n_missing,
           CASE
               WHEN s.multi_items IS NOT NULL THEN 'item(s) ' || s.multi_items || ' answered more than once'
               WHEN s.out_of_range IS NOT NULL
                   THEN s.out_of_range || ' outside the item range '
                        || printf('%g', ins.item_lo) || '..' || printf('%g', ins.item_hi)
               WHEN s.items_answered = 0 THEN 'no items answered'
               WHEN s.items_answered < s.items_expected AND ins.missing_rule = 'prorate'
                    AND s.items_expected - s.items_answered > ins.max_missing
                   THEN (s.items_expected - s.items_answered) || ' of ' || s.items_expected
                        || ' items missing (at most ' || ins.max_missing || ' can be prorated)'
               WHEN s.items_answered < s.items_expected AND ins.missing_rule = 'invalid'
                   THEN (s.items_expected - s.items_answered) || ' of ' || s.items_expected
                        || ' items missing (this instrument allows none)'
           END AS pre_reason
    FROM scales s
    JOIN _sc_route r USING (source, response_id)
    JOIN _reg_inst ins ON ins.instrument = r.instrument
),
valued AS (
    SELECT *,
           CASE WHEN pre_reason IS NULL THEN
               CASE WHEN rule = 'mean' THEN raw_mean
                    ELSE raw_sum * items_expected / items_answered END
           END AS value
    FROM scored
)
SELECT v.source, v.response_id, v.version_id, v.status, v.questionnaire, v.questionnaire_id,
       v.instrument, v.domain, v.scale,
       CASE WHEN v.value BETWEEN v.scale_lo AND v.scale_hi THEN v.value END AS score,
       v.scale_lo AS scale_min, v.scale_hi AS scale_max,
       v.items_answered, v.items_expected,
       (v.value BETWEEN v.scale_lo AND v.scale_hi) IS TRUE AS is_valid,
       CASE
           WHEN v.pre_reason IS NOT NULL THEN v.pre_reason
           WHEN NOT v.value BETWEEN v.scale_lo AND v.scale_hi
               THEN 'score ' || printf('%g', v.value) || ' outside the scale range '
                    || printf('%g', v.scale_lo) || '..' || printf('%g', v.scale_hi)
       END AS invalid_reason,
       v.n_missing > 0 AND v.value IS NOT NULL AS prorated,
       CASE v.source_type WHEN 'Patient' THEN 'patient' WHEN 'Practitioner' THEN 'clinician'
            WHEN 'PractitionerRole' THEN 'clinician' WHEN 'RelatedPerson' THEN 'other'
            ELSE v.default_rater END AS rater,
       CASE WHEN v.source_type IS NULL THEN 'default' ELSE 'source' END AS rater_basis,
       CASE WHEN v.scale = 'total' THEN v.reported_total END AS reported_total,
       CASE WHEN v.scale = 'total' AND v.reported_total IS NOT NULL AND v.value IS NOT NULL
            THEN abs(v.reported_total - v.value) > 1e-6 END AS reported_total_mismatch,
       b.band AS severity_band,
       k.risk_flag,
       v.authored_at, v.patient_ref, v.encounter_ref,
       CASE WHEN v.source_type IN ('Practitioner', 'PractitionerRole')
                THEN coalesce(nullif(regexp_extract(v.source_ref, '{_REF}', 1), ''), v.source_ref)
            WHEN v.author_type IN ('Practitioner', 'PractitionerRole')
                THEN coalesce(nullif(regexp_extract(v.author_ref, '{_REF}', 1), ''), v.author_ref)
       END AS practitioner_ref,
       v.source_ref, v.author_ref,
       v.registry_file, v.registry_version, v.score_sources,
       v.unmapped_answers::INTEGER AS unmapped_answers
FROM valued v
LEFT JOIN _reg_band b
       ON b.instrument = v.instrument AND v.scale = 'total' AND v.value BETWEEN v.scale_lo AND v.scale_hi
      AND v.value >= b.lo AND v.value < b.hi_excl
LEFT JOIN risk k ON k.source = v.source AND k.response_id = v.response_id
ORDER BY v.source, v.response_id, v.scale
"""  # noqa: S608 - the interpolated regexes are module constants

_UNMAPPED = """
CREATE OR REPLACE TABLE staging.unmapped_responses AS
SELECT source, response_id, version_id, status, questionnaire, instrument,
       route_reason AS reason, route_detail AS detail, answers::INTEGER AS answers,
       patient_ref, encounter_ref, authored_at
FROM _sc_route WHERE route = 'unmapped'
ORDER BY source, response_id
"""

# entered-in-error withdraws the newest earlier version that was scoreable (completed/amended).
_EXCLUDED = """
CREATE OR REPLACE TABLE staging.excluded_responses AS
WITH earlier AS (
    SELECT source, id AS response_id,
           max_by(version_id, last_updated) AS withdrawn_version
    FROM raw.questionnaire_response
    WHERE resource ->> 'status' IN ('completed', 'amended')
    GROUP BY ALL
)
SELECT r.source, r.response_id, r.version_id, r.status, r.route_reason AS reason, r.route_detail AS detail,
       CASE WHEN r.status = 'entered-in-error' AND e.withdrawn_version IS DISTINCT FROM r.version_id
            THEN e.withdrawn_version END AS withdrawn_version,
       r.instrument, r.patient_ref, r.encounter_ref, r.authored_at
FROM _sc_route r
LEFT JOIN earlier e USING (source, response_id)
WHERE r.route = 'excluded'
ORDER BY r.source, r.response_id
"""

_INSTRUMENT_SCALES = """
CREATE OR REPLACE TABLE staging.instrument_scales AS
SELECT s.instrument, i.domain, s.scale, any_value(s.rule) AS rule,
       any_value(s.scale_lo) AS scale_min, any_value(s.scale_hi) AS scale_max,
       count(*)::INTEGER AS items_expected,
       any_value(i.item_lo) AS item_min, any_value(i.item_hi) AS item_max,
       any_value(i.missing_rule) AS missing_rule, any_value(i.max_missing)::INTEGER AS max_missing,
       any_value(i.default_rater) AS default_rater,
       any_value(i.registry_file) AS registry_file, any_value(i.registry_version) AS registry_version
FROM _reg_scale s JOIN _reg_inst i USING (instrument)
GROUP BY s.instrument, i.domain, s.scale
ORDER BY s.instrument, s.scale
"""


_WORK_TABLES = ("_sc_resp", "_fs", "_fs_exact", "_fs_loose", "_fs_int", "_sc_ans", "_sc_route", "_sc_item")


def build_measure_scores(
    con: duckdb.DuckDBPyConnection, registry: Mapping[str, Instrument] | None = None
) -> dict[str, int]:
    """(Re)build the scoring tables from staging; returns row counts and the reconciliation.

    Needs the staging tables of flatten.py and questionnaires.py. Rebuilt whole (CREATE OR REPLACE),
    so running it twice gives identical tables.
    """
    reg = registry if registry is not None else load_registry()
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    forms = build_form_tables(con, reg)
    frames = _registry_frames(reg)
    for name, df in frames.items():
        con.register(f"{name}_df", df)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_df")  # noqa: S608
        con.unregister(f"{name}_df")
    try:
        for statement in (_RESPONSES, _FORM_SCORES, _ANSWERS, _ROUTES, _ITEMS, _SCALES, _UNMAPPED, _EXCLUDED):
            con.execute(statement)
        con.execute(_INSTRUMENT_SCALES)
    finally:
        for name in (*_WORK_TABLES, *frames):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return {"forms": forms, **reconcile(con)}


def reconcile(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Responses in staging vs scored + unmapped + excluded (each response in exactly one)."""
    row = con.execute(
        """SELECT (SELECT count(*) FROM staging.questionnaire_responses),
                  (SELECT count(DISTINCT (source, response_id)) FROM staging.measure_scores),
                  (SELECT count(*) FROM staging.unmapped_responses),
                  (SELECT count(*) FROM staging.excluded_responses),
                  (SELECT count(*) FROM staging.measure_scores),
                  (SELECT count(*) FILTER (WHERE is_valid) FROM staging.measure_scores)"""
    ).fetchall()[0]
    responses, scored, unmapped, excluded, rows, valid = (int(x) for x in row)
    return {
        "responses": responses,
        "scored_responses": scored,
        "unmapped_responses": unmapped,
        "excluded_responses": excluded,
        "unaccounted": responses - scored - unmapped - excluded,
        "score_rows": rows,
        "valid_score_rows": valid,
    }
