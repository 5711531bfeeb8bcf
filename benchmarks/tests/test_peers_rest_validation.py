"""The naive pandas peer, the REST benchmark against the real server, and the validation study."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks import rest, validation
from benchmarks.common import REPO_ROOT
from benchmarks.generate import ScaleConfig, generate


def _peers_module():
    spec = importlib.util.spec_from_file_location(
        "run_peers", REPO_ROOT / "benchmarks" / "peers" / "run_peers.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("peers") / "data"
    return folder, generate(ScaleConfig(responses=300, seed=21, bad_rate=0.02), folder)


def test_peer_sample_skips_unparseable_lines_and_caps(data):
    peers = _peers_module()
    folder, manifest = data
    path = folder / "QuestionnaireResponse.ndjson"
    assert len(peers.sample_lines(path, 0)) == manifest["lines"]["QuestionnaireResponse"] - 1
    assert len(peers.sample_lines(path, 25)) == 25


def test_naive_pandas_peer_counts_top_level_answers(data, tmp_path):
    peers = _peers_module()
    folder, _ = data
    lines = peers.sample_lines(folder / "QuestionnaireResponse.ndjson", 0)
    expected = sum(len(it.get("answer") or []) for ln in lines for it in json.loads(ln).get("item") or [])
    result = peers.run_pandas(lines, tmp_path)
    assert result["rows"] == expected > len(lines)
    assert result["load_seconds"] >= 0 and result["flatten_seconds"] > 0


def test_peer_view_definition_walks_nested_items_and_answers():
    view = _peers_module().VIEW
    repeat = view["select"][1]
    assert repeat["repeat"] == ["item", "answer.item"]
    assert repeat["select"][0]["forEach"] == "answer"


def test_peer_answer_counts_query_counts_rows_and_responses():
    """The fhir4ds peer's count query (a file, run by the peers' own DuckDB) on a table like its output."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE answers AS SELECT * FROM (VALUES ('r1'), ('r1'), ('r2')) AS t(response_id)")
    sql = _peers_module().ANSWER_COUNTS_SQL.read_text(encoding="utf-8")
    assert con.execute(sql).fetchall() == [(3, 2)]


@pytest.mark.slow  # rest.run starts a FHIR server process
def test_rest_pulls_see_the_same_resources_on_the_real_server(tmp_path, monkeypatch):
    monkeypatch.setattr(rest, "folder_for", lambda scale: tmp_path / str(scale))
    result = rest.run(responses=150, seed=4, page_size=40, repeats=1)
    assert result["same_resources"]
    assert result["pipeline_runs"][0]["resources"] == result["responses"] == 150
    assert result["pipeline_runs"][0]["pages"] == result["requests_runs"][0]["pages"] >= 4
    assert result["ratio"] and result["pipeline_per_s"] and result["requests_per_s"]


def test_validation_study_fast_path_matches_the_full_model(tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "folder_for", lambda scale: tmp_path / str(scale))
    result = validation.study(scale=400, seed=8, sample=2000, workers=2, mutants=300)
    designs = {d["design"].split(",")[0]: d for d in result["designs"]}
    assert designs["full model (fast_path=False)"]["per_s"] > 0
    assert all("DIFFER" not in d["equivalence"] for d in result["designs"])
    if result["fast_path_in_tree"]:
        assert result["differences"] == []
        planted = result["planted"]
        assert planted["records"] > 0 and planted["agree"] == planted["records"]
        assert planted["rejected_full"] == planted["rejected_fast"] == planted["expected_rejected"]
        assert result["mutants"]["total"] == 300 and result["mutants"]["disagreements"] == 0
        assert result["mutants"]["with_findings"] > 0


def test_mutants_are_deterministic_and_change_the_resource():
    items = [
        ("Patient", {"resourceType": "Patient", "id": "p1", "gender": "female", "name": [{"family": "A"}]})
    ]
    first = list(validation._mutants(items, 20, seed=1))
    again = list(validation._mutants(items, 20, seed=1))
    assert [m[2] for m in first] == [m[2] for m in again] and len(first) == 20
    assert all(m[1] != items[0][1] for m in first)
