"""A run with nothing new does no heavy work; a new version rebuilds staging and scores."""

from __future__ import annotations

import dagster as dg

from assets.staging import answer_assets
from pipelines.resources.fhir_source import WarehouseResource
from tests.support.scoring_kit import ScoringDB, qr


def _run(path) -> dict[str, dict]:
    result = dg.materialize([*answer_assets], resources={"warehouse": WarehouseResource(path=str(path))})
    assert result.success
    out = {}
    for node in ("staging__questionnaire_answers", "staging__questionnaire_items", "staging__measure_scores"):
        meta = result.asset_materializations_for_node(node)[0].metadata
        out[node] = {k: v.value for k, v in meta.items()}
    return out


def test_unchanged_inputs_skip_the_rebuild_and_new_versions_rebuild(tmp_path):
    path = tmp_path / "wh.duckdb"
    db = ScoringDB(path=str(path))
    db.forms("phq-9")
    db.response(qr("p", "phq-9", [1] * 9))
    db.con.close()

    first = _run(path)
    assert not any(m["skipped"] for m in first.values())
    assert first["staging__measure_scores"]["scored_responses"] == 1

    second = _run(path)
    assert all(m["skipped"] for m in second.values())
    assert second["staging__measure_scores"]["score_rows"] == first["staging__measure_scores"]["score_rows"]

    db = ScoringDB(path=str(path))
    db.response(qr("p", "phq-9", [2] * 9, status="amended"), version="2")
    db.con.close()
    third = _run(path)
    assert not third["staging__questionnaire_answers"]["skipped"]
    assert third["staging__questionnaire_items"]["skipped"]  # no new Questionnaire version
    assert not third["staging__measure_scores"]["skipped"]
    db = ScoringDB(path=str(path))
    try:
        assert db.total("p")["score"] == 18 and db.total("p")["status"] == "amended"
    finally:
        db.con.close()


def test_a_changed_registry_rescoring_without_new_data(tmp_path, monkeypatch):
    path = tmp_path / "wh.duckdb"
    db = ScoringDB(path=str(path))
    db.forms("srs")
    db.response(qr("s", "srs", [9, 9, 9, 9]))
    db.con.close()
    _run(path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "srs_site.yaml").write_text("extends: srs\nthresholds: {concern_below: 37}\n")
    monkeypatch.setenv("ALLIANCE_QI_INSTRUMENTS_DIR", str(site))
    again = _run(path)
    assert again["staging__questionnaire_answers"]["skipped"]
    assert not again["staging__measure_scores"]["skipped"]
