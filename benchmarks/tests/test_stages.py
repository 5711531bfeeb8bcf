"""Benchmark stages against a small generated data set, in this process."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from benchmarks.generate import ScaleConfig, generate
from benchmarks.stages import BY_NAME, FLOOR, NotBuiltYet, Stage, StageOutput, _optional, run_stage


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    base = tmp_path_factory.mktemp("stages")
    manifest = generate(ScaleConfig(responses=400, seed=9, bad_rate=0.02), base / "data")
    return base / "data", manifest, base


def test_floor_counts_every_parseable_response_line(small):
    data, manifest, base = small
    result = run_stage(FLOOR, data, None, "t", base)
    assert result["status"] == "ok"
    # ignore_errors keeps the truncated line as an all-NULL row: every line is counted
    assert result["rows"] == manifest["lines"]["QuestionnaireResponse"]
    assert result["detail"]["unnest_answers"] > result["rows"]
    assert result["seconds"] > 0 and result["responses_per_s"] > 0


def test_land_then_flatten_reconcile_with_the_files(small):
    data, manifest, base = small
    wh = base / "w.duckdb"
    land = run_stage(BY_NAME["land"], data, wh, "run-1", base)
    assert land["status"] == "ok", land.get("error")
    assert land["rows"] == manifest["total_lines"]
    per_type = land["detail"]["per_type"]
    assert all(t["reconciles"] for t in per_type.values())
    planted_rejected = sum(1 for p in manifest["planted"] if p["expect"] in ("rejected", "unparseable"))
    assert land["detail"]["rejected"] == planted_rejected
    flatten = run_stage(BY_NAME["flatten"], data, wh, "run-1", base)
    assert flatten["status"] == "ok"
    with duckdb.connect(str(wh), read_only=True) as con:
        responses = con.execute("SELECT count(*) FROM staging.questionnaire_responses").fetchall()[0][0]
    rejected_qr = per_type["QuestionnaireResponse"]["rejected"] - 1  # minus the unparseable line
    assert responses == manifest["responses"] - rejected_qr
    assert flatten["rows"] == flatten["detail"]["answers"] > responses
    # the no-change rerun lands nothing new
    again = run_stage(BY_NAME["land"], data, wh, "run-2", base)
    assert again["detail"]["new_versions"] == 0
    # unchanged files are not read again (raw.source_files in the landing files)
    assert again["detail"]["unchanged"] + again["detail"]["rejected"] == 0
    assert all(t["reconciles"] for t in again["detail"]["per_type"].values())


def test_a_missing_module_is_not_built_yet_never_a_number(small):
    data, _, base = small
    with pytest.raises(NotBuiltYet):
        _optional("pipelines.no_such_module_here", "run")
    with pytest.raises(NotBuiltYet):
        _optional("benchmarks.stages", "no_such_function")

    def later(ctx):
        _optional("pipelines.no_such_module_here", "run")
        return StageOutput(1, "rows")

    result = run_stage(Stage("later", later, False, "not yet", needs_warehouse=False), data, None, "t", base)
    assert result["status"] == "not built yet"
    assert "seconds" not in result and "rows" not in result


def test_a_failing_stage_is_recorded_as_an_error(small):
    data, _, base = small

    def broken(ctx):
        raise RuntimeError("boom")

    result = run_stage(Stage("broken", broken, False, "fails", needs_warehouse=False), data, None, "t", base)
    assert result["status"] == "error" and "boom" in result["error"]


def test_duckdb_memory_limit_is_checked_and_applied(small):
    data, _, base = small
    with pytest.raises(ValueError):
        run_stage(BY_NAME["flatten"], data, base / "m.duckdb", "t", base, memory_limit="1GB; DROP TABLE x")
    result = run_stage(BY_NAME["questionnaires"], data, base / "m.duckdb", "t", base, memory_limit="256MB")
    assert result["status"] == "ok" and result["duckdb_memory_limit"] == "256MB"
