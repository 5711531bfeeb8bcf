"""End to end scoring: generated clinic on a real FHIR server -> Dagster raw, staging and scoring
assets -> DuckDB file, checked against an independent oracle that decodes every response with the
generator's own form layouts and scores it by the rules written out in docs/domain.md."""

from __future__ import annotations

import json
import math
from typing import Any

import dagster as dg
import duckdb
import pytest

from assets.raw import build_raw_assets
from assets.staging import answer_assets
from demo import forms
from demo.generator import GeneratorConfig, generate
from demo.loader import load_to_server
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts FHIR server processes

INSTRUMENT = {
    "wai-sr": "wai_sr",
    "wai-sr-t": "wai_therapist",
    "srs": "srs",
    "ors": "ors",
    "phq-9": "phq9",
    "gad-7": "gad7",
    "mars": "mars",
    "dai-10": "dai10",
    "cbtsq": "cbtsq",
}
FORM_BY_CANONICAL = {forms.canonical_for(f): f for f in forms.FORMS}
WAI_SCALES = {"task": (1, 2, 10, 12), "goal": (4, 6, 8, 11), "bond": (3, 5, 7, 9)}
MARS_YES_SCORES = {7, 8}
DAI_TRUE_SCORES = {1, 3, 4, 7, 9, 10}
# docs/domain.md: CBTSQ behavioural activation = items 1-7, cognitive restructuring = items 8-16 (sums)
CBTSQ_SCALES = {"behavioral_activation": tuple(range(1, 8)), "cognitive_restructuring": tuple(range(8, 17))}


def _decode(layout: forms.FormLayout, answer: dict[str, Any]) -> int | bool:
    """Inverse of the generator's answer encoding (demo.forms.answer_value)."""
    kind = layout.answer_kind
    if kind in ("wai", "cbtsq"):
        return int(answer["valueCoding"]["code"])
    if kind == "integer":
        return int(answer["valueInteger"])
    if kind in ("loinc", "loinc-nosystem"):
        return [c for c, _ in forms.PHQ_ANSWERS].index(answer["valueCoding"]["code"])
    if kind == "sdc":
        return [c for c, _ in forms.SDC_ANSWERS].index(answer["valueCoding"]["code"])
    if kind == "yes-no":
        return answer["valueCoding"]["code"] == forms.YES_NO[True][0]
    return bool(answer["valueBoolean"])


def _answers(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        for answer in item.get("answer") or []:
            out[item["linkId"]] = answer
            out.update(_answers(answer.get("item")))
        out.update(_answers(item.get("item")))
    return out


def oracle(resource: dict[str, Any]) -> tuple[str, dict[str, float | None]] | str:
    """('instrument', {scale: score or None when invalid}), or 'excluded' / 'unmapped'."""
    if resource["status"] not in ("completed", "amended"):
        return "excluded"
    form_id = FORM_BY_CANONICAL.get(resource.get("questionnaire", ""))
    if form_id is None:
        return "unmapped"
    layout = forms.LAYOUTS[form_id]
    instrument = INSTRUMENT[layout.instrument]
    answers = _answers(resource.get("item", []))
    values = [_decode(layout, answers[lid]) if lid in answers else None for lid in layout.link_ids]
    if instrument == "mars":
        keyed = [None if v is None else float(v == (i in MARS_YES_SCORES)) for i, v in enumerate(values, 1)]
    elif instrument == "dai10":
        keyed = [
            None if v is None else (1.0 if v == (i in DAI_TRUE_SCORES) else -1.0)
            for i, v in enumerate(values, 1)
        ]
    else:
        keyed = [None if v is None else float(v) for v in values]
    answered = [v for v in keyed if v is not None]
    missing = len(keyed) - len(answered)
    prorate = instrument in ("phq9", "gad7")
    if missing == 0:
        total: float | None = sum(answered)
    elif prorate and missing <= 2:
        # prorated, then rounded to the nearest whole number, halves up (registry missing.round)
        total = float(math.floor(sum(answered) * len(keyed) / len(answered) + 0.5))
    else:
        total = None
    scales: dict[str, float | None] = {"total": total}
    if instrument.startswith("wai"):
        scales["mean"] = None if total is None else total / 12
        for name, idx in WAI_SCALES.items():
            sub = [keyed[i - 1] for i in idx]
            scales[name] = None if None in sub else sum(sub) / 4  # type: ignore[arg-type]
    if instrument == "cbtsq":
        scales["mean"] = None if total is None else total / 16
        for name, idx in CBTSQ_SCALES.items():
            sub = [keyed[i - 1] for i in idx]
            scales[name] = None if None in sub else sum(sub)  # type: ignore[arg-type]
    return instrument, scales


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A generated clinic with mess, loaded in two phases, pulled and scored by the real assets."""
    from demo.server import running_server

    tmp = tmp_path_factory.mktemp("scoring")
    clinic = generate(GeneratorConfig(patients=40, seed=11, mess_rate=0.05))
    with running_server(tmp / "fhir") as server:
        load_to_server(server.base_url, clinic)
        wh = tmp / "warehouse.duckdb"
        result = dg.materialize(
            [*build_raw_assets(None), *answer_assets],
            resources={
                "fhir": FhirSourcesResource.single(name="it", base_url=server.base_url, page_size=200),
                "warehouse": WarehouseResource(path=str(wh)),
            },
        )
    assert result.success
    con = duckdb.connect(str(wh), read_only=True)
    yield clinic, con, result
    con.close()


def test_every_score_matches_the_oracle(scored):
    _, con, _ = scored
    current = con.execute(
        """SELECT id, resource::VARCHAR FROM raw.questionnaire_response
           QUALIFY row_number() OVER (PARTITION BY source, id ORDER BY last_updated DESC) = 1"""
    ).fetchall()
    scores: dict[str, dict[str, float | None]] = {}
    for rid, scale, score in con.execute(
        "SELECT response_id, scale, score FROM staging.measure_scores"
    ).fetchall():
        scores.setdefault(rid, {})[scale] = score
    excluded = {r[0] for r in con.execute("SELECT response_id FROM staging.excluded_responses").fetchall()}
    unmapped = {r[0] for r in con.execute("SELECT response_id FROM staging.unmapped_responses").fetchall()}
    checked = 0
    for rid, text in current:
        expected = oracle(json.loads(text))
        if expected == "excluded":
            assert rid in excluded, rid
        elif expected == "unmapped":
            assert rid in unmapped, rid
        else:
            _, scales = expected
            assert set(scores[rid]) == set(scales), rid
            for name, value in scales.items():
                assert (
                    scores[rid][name] == pytest.approx(value)
                    if value is not None
                    else scores[rid][name] is None
                )
            checked += 1
    assert checked > 500


def test_all_nine_instruments_have_valid_scores_and_everything_reconciles(scored):
    _, con, result = scored
    valid = dict(
        con.execute(
            """SELECT instrument, count(*) FROM staging.measure_scores
               WHERE scale = 'total' AND is_valid GROUP BY 1"""
        ).fetchall()
    )
    assert set(valid) == set(INSTRUMENT.values()) and min(valid.values()) > 5
    meta = result.asset_materializations_for_node("staging__measure_scores")[0].metadata
    assert meta["unaccounted"].value == 0
    assert meta["responses"].value == (
        meta["scored_responses"].value + meta["unmapped_responses"].value + meta["excluded_responses"].value
    )


def test_planted_mess_is_scored_flagged_or_accounted_for(scored):
    clinic, con, _ = scored

    def q(sql: str) -> set:
        return {r[0] for r in con.execute(sql).fetchall()}

    excluded = dict(con.execute("SELECT response_id, status FROM staging.excluded_responses").fetchall())
    unmapped = dict(con.execute("SELECT response_id, reason FROM staging.unmapped_responses").fetchall())
    mismatched = q("SELECT response_id FROM staging.measure_scores WHERE reported_total_mismatch")
    amended = q(
        "SELECT response_id FROM staging.measure_scores WHERE status = 'amended' AND version_id = '2'"
    )
    short = q("SELECT response_id FROM staging.measure_scores WHERE items_answered < items_expected")
    rejected = q("SELECT id FROM raw.rejected WHERE resource_type = 'QuestionnaireResponse'")
    scored_ids = q("SELECT response_id FROM staging.measure_scores")
    seen: set[str] = set()
    for m in clinic.manifest["mess"]:
        if m["resourceType"] != "QuestionnaireResponse":
            continue
        rid, kind = m["id"], m["kind"]
        seen.add(kind)
        if kind == "entered_in_error":
            assert excluded.get(rid) == "entered-in-error", rid
        elif kind in ("in_progress", "stopped"):
            assert excluded.get(rid) == kind.replace("_", "-"), rid
        elif kind == "unknown_questionnaire":
            assert unmapped.get(rid) == "unknown questionnaire", rid
        elif kind == "total_mismatch":
            assert rid in mismatched, rid
        elif kind == "amended":
            assert rid in amended, rid
        elif kind == "missing_items":
            assert rid in short, rid
        elif kind == "duplicate_submission":
            assert rid in scored_ids, rid
        elif kind == "invalid_structure":
            assert rid in rejected and rid not in scored_ids, rid
    assert seen >= {"entered_in_error", "amended", "missing_items", "unknown_questionnaire", "total_mismatch"}


def test_clinician_recorded_patient_answered_responses_are_patient_rated(scored):
    _, con, _ = scored
    rows = con.execute(
        """SELECT rater, count(*) FROM staging.measure_scores
           WHERE scale = 'total' AND source_ref LIKE 'Patient/%' AND author_ref LIKE 'Practitioner/%'
           GROUP BY 1"""
    ).fetchall()
    assert rows and dict(rows) == {"patient": dict(rows)["patient"]}
    therapist = con.execute(
        "SELECT DISTINCT rater FROM staging.measure_scores WHERE instrument = 'wai_therapist'"
    ).fetchall()
    assert therapist == [("clinician",)]
