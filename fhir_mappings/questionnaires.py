"""Resolve landed Questionnaires into item codes and answer scores.

For each Questionnaire version: every item (at any depth) with its linkId and codes, and every
answer option's score from, in order: the option's `ordinalValue` (R4), `questionnaire-ordinalValue`
(older forms) or `itemWeight` (R5 and newer packs) extension, or the same extensions on the
concepts of a contained (or inline-expanded) ValueSet / CodeSystem the item's `answerValueSet`
points at. Instruments' own answer tables (e.g. LOINC LA codes) are the scoring layer's fallback.

Questionnaires are few (tens), so this walks them in Python; responses are never looped over.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pandas as pd

SCORE_EXTENSIONS = (
    "http://hl7.org/fhir/StructureDefinition/ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/questionnaire-ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/itemWeight",
)


@dataclass(frozen=True)
class AnswerScore:
    """One scored answer option of one item."""

    link_id: str
    system: str | None
    code: str | None
    value_integer: int | None
    score: float
    score_source: str  # extension URL tail, prefixed with 'valueset:' when taken from a ValueSet


def _score(extensions: Any) -> tuple[float, str] | None:
    for ext in extensions or []:
        if isinstance(ext, dict) and ext.get("url") in SCORE_EXTENSIONS:
            for key in ("valueDecimal", "valueInteger"):
                value = ext.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return float(value), str(ext["url"]).rsplit("/", 1)[-1]
    return None


def _walk(items: Any, depth: int = 1) -> Iterator[dict[str, Any]]:
    for item in items or []:
        if isinstance(item, dict):
            yield item
            if depth < 20:
                yield from _walk(item.get("item"), depth + 1)


def _valueset_scores(q: dict[str, Any]) -> dict[str, dict[tuple[str | None, str], tuple[float, str]]]:
    """Scores on concepts of contained ValueSets/CodeSystems, keyed by '#id' and by url."""
    out: dict[str, dict[tuple[str | None, str], tuple[float, str]]] = {}
    for res in q.get("contained") or []:
        if not isinstance(res, dict):
            continue
        scores: dict[tuple[str | None, str], tuple[float, str]] = {}
        if res.get("resourceType") == "ValueSet":
            for inc in (res.get("compose") or {}).get("include") or []:
                for c in inc.get("concept") or []:
                    s = _score(c.get("extension"))
                    if s and c.get("code"):
                        scores[(inc.get("system"), c["code"])] = s
            for c in (res.get("expansion") or {}).get("contains") or []:
                s = _score(c.get("extension"))
                if s and c.get("code"):
                    scores[(c.get("system"), c["code"])] = s
        elif res.get("resourceType") == "CodeSystem":
            for c in res.get("concept") or []:
                s = _score(c.get("extension"))
                if s and c.get("code"):
                    scores[(res.get("url"), c["code"])] = s
        if scores:
            if res.get("id"):
                out[f"#{res['id']}"] = scores
            if res.get("url"):
                out[str(res["url"])] = scores
    return out


def _pairs(values: Any, key: str) -> list[str]:
    """Codings or identifiers as 'system|value' strings ('|value' when the system is missing)."""
    out: list[str] = []
    for v in values or []:
        if isinstance(v, dict) and isinstance(v.get(key), str):
            out.append(f"{v.get('system') or ''}|{v[key]}")
    return out


def answer_scores(q: dict[str, Any]) -> list[AnswerScore]:
    """Every scored answer option of a Questionnaire."""
    vs = _valueset_scores(q)
    out: list[AnswerScore] = []
    for item in _walk(q.get("item")):
        link_id = item.get("linkId")
        if not isinstance(link_id, str):
            continue
        for opt in item.get("answerOption") or []:
            s = _score(opt.get("extension")) if isinstance(opt, dict) else None
            if s is None:
                continue
            coding = opt.get("valueCoding") or {}
            vint = opt.get("valueInteger")
            out.append(
                AnswerScore(
                    link_id,
                    coding.get("system"),
                    coding.get("code"),
                    vint if isinstance(vint, int) else None,
                    s[0],
                    s[1],
                )
            )
        bound = vs.get(str(item.get("answerValueSet") or ""))
        for (system, code), (score, source) in (bound or {}).items():
            out.append(AnswerScore(link_id, system, code, None, score, f"valueset:{source}"))
    return out


def build_questionnaire_tables(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """(Re)build `staging.questionnaires`, `staging.questionnaire_items` and
    `staging.questionnaire_answer_scores` from the newest version of each landed Questionnaire."""
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    rows = con.execute(
        """SELECT source, id, version_id, last_updated, resource::VARCHAR FROM raw.questionnaire
           QUALIFY row_number() OVER (PARTITION BY source, id
                                      ORDER BY last_updated DESC NULLS LAST, version_id DESC) = 1
                   AND deleted IS NOT TRUE  -- newest version a tombstone: deleted at the source"""
    ).fetchall()
    forms: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for source, qid, version_id, last_updated, text in rows:
        q = orjson.loads(text)
        key = {"source": source, "questionnaire_id": qid, "url": q.get("url"), "version": q.get("version")}
        forms.append(
            {
                **key,
                "version_id": version_id,
                "name": q.get("name"),
                "title": q.get("title"),
                "status": q.get("status"),
                "codes": _pairs(q.get("code"), "code"),
                "identifiers": _pairs(q.get("identifier"), "value"),
                "last_updated": last_updated,
            }
        )
        for order, item in enumerate(_walk(q.get("item")), start=1):
            codes = [c.get("code") for c in item.get("code") or [] if isinstance(c, dict)]
            items.append(
                {
                    **key,
                    "link_id": item.get("linkId"),
                    "item_order": order,
                    "type": item.get("type"),
                    "codes": [c for c in codes if c],
                }
            )
        for s in answer_scores(q):
            scores.append(
                {
                    **key,
                    "link_id": s.link_id,
                    "system": s.system,
                    "code": s.code,
                    "value_integer": s.value_integer,
                    "score": s.score,
                    "score_source": s.score_source,
                }
            )
    item_cols = ["source", "questionnaire_id", "url", "version", "link_id", "item_order", "type", "codes"]
    score_cols = [
        "source",
        "questionnaire_id",
        "url",
        "version",
        "link_id",
        "system",
        "code",
        "value_integer",
        "score",
        "score_source",
    ]
    form_cols = [
        "source",
        "questionnaire_id",
        "url",
        "version",
        "version_id",
        "name",
        "title",
        "status",
        "codes",
        "identifiers",
        "last_updated",
    ]
    forms_df = pd.DataFrame(forms, columns=form_cols)
    items_df = pd.DataFrame(items, columns=item_cols)
    scores_df = pd.DataFrame(scores, columns=score_cols)
    con.register("_q_forms", forms_df)
    con.register("_q_items", items_df)
    con.register("_q_scores", scores_df)
    try:
        con.execute("""CREATE OR REPLACE TABLE staging.questionnaires AS
                       SELECT source, questionnaire_id, url, version, version_id, name, title, status,
                              codes::VARCHAR[] AS codes, identifiers::VARCHAR[] AS identifiers,
                              last_updated::TIMESTAMPTZ AS last_updated
                       FROM _q_forms""")
        con.execute("""CREATE OR REPLACE TABLE staging.questionnaire_items AS
                       SELECT source, questionnaire_id, url, version, link_id,
                              item_order::INTEGER AS item_order, type, codes::VARCHAR[] AS codes
                       FROM _q_items""")
        con.execute("""CREATE OR REPLACE TABLE staging.questionnaire_answer_scores AS
                       SELECT source, questionnaire_id, url, version, link_id, system, code,
                              value_integer::BIGINT AS value_integer, score::DOUBLE AS score, score_source
                       FROM _q_scores""")
    finally:
        con.unregister("_q_forms")
        con.unregister("_q_items")
        con.unregister("_q_scores")
    return {"questionnaires": len(rows), "items": len(items), "answer_scores": len(scores)}
