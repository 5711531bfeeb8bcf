"""The asset-check factory: suites become Dagster checks with the right severity and blocking, every
evaluation lands in quality.check_results under the Dagster run id, and a failing blocking check
really stops the downstream asset in the same run (while contained and WARN failures do not)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.checks import build_quality_checks, build_suite_checks
from assets.raw import raw_assets
from assets.staging import answer_assets
from pipelines.resources.fhir_source import WarehouseResource
from quality_checks.suite import Suite, load_suites

SUITE = """
suite: gate
asset: staging/measure_scores
datasets:
  scores:
    requires: [staging.measure_scores]
    sql: SELECT source, response_id, score FROM staging.measure_scores ORDER BY response_id
checks:
  - id: gate_unique
    table: staging.measure_scores
    dataset: scores
    severity: ERROR
    description: one row per response
    key_columns: [response_id]
    expect: {type: expect_column_values_to_be_unique, kwargs: {column: response_id}}
  - id: gate_score_in_range
    table: staging.measure_scores
    dataset: scores
    severity: ERROR
    quarantine: true
    description: score between 0 and 27
    key_columns: [response_id]
    expect: {type: expect_column_values_to_be_between, kwargs: {column: score, min_value: 0, max_value: 27}}
  - id: gate_score_present
    table: staging.measure_scores
    dataset: scores
    severity: WARN
    description: score present
    key_columns: [response_id]
    expect: {type: expect_column_values_to_not_be_null, kwargs: {column: score}}
"""


def _suite(tmp_path: Path) -> Suite:
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "gate.yaml").write_text(SUITE)
    (suite,) = load_suites(folder)
    return suite


def _pipeline(rows: list[tuple[str, float | None]]) -> list[dg.AssetsDefinition]:
    """A stand-in scoring asset that writes `rows`, and a mart downstream of it."""

    @dg.asset(key=["staging", "measure_scores"])
    def scores(warehouse: WarehouseResource) -> None:
        with warehouse.connect() as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS staging")
            con.execute(
                """CREATE OR REPLACE TABLE staging.measure_scores
                   (source VARCHAR, response_id VARCHAR, score DOUBLE)"""
            )
            con.executemany("INSERT INTO staging.measure_scores VALUES ('site', ?, ?)", rows)

    @dg.asset(key=["marts", "downstream"], deps=[dg.AssetKey(["staging", "measure_scores"])])
    def downstream(warehouse: WarehouseResource) -> None:
        with warehouse.connect() as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS marts")
            con.execute(
                """CREATE OR REPLACE TABLE marts.downstream AS
                   SELECT s.* FROM staging.measure_scores s
                   WHERE NOT EXISTS (SELECT 1 FROM quality.current_quarantine q
                                     WHERE q.table_name = 'staging.measure_scores'
                                       AND q.source = s.source AND q.record_key = s.response_id)"""
            )

    return [scores, downstream]


def _materialize(
    tmp_path: Path, rows: list[tuple[str, float | None]]
) -> tuple[dg.ExecuteInProcessResult, Path]:
    wh = tmp_path / "warehouse.duckdb"
    assets = _pipeline(rows)
    checks = build_quality_checks(assets, [_suite(tmp_path)])
    result = dg.materialize(
        [*assets, *checks], resources={"warehouse": WarehouseResource(path=str(wh))}, raise_on_error=False
    )
    return result, wh


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_failing_blocking_check_stops_the_downstream_asset(tmp_path):
    result, wh = _materialize(tmp_path, [("qr-1", 5.0), ("qr-1", 6.0), ("qr-2", 7.0)])
    assert not result.success
    assert _materialized(result) == {"staging/measure_scores"}  # marts/downstream never ran
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["gate_unique"].passed is False
    assert evals["gate_unique"].severity == dg.AssetCheckSeverity.ERROR
    con = duckdb.connect(str(wh), read_only=True)
    try:
        assert not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'marts'"
        ).fetchall()[0][0]
        rows = con.execute(
            "SELECT expectation_id, outcome, run_id FROM quality.check_results ORDER BY expectation_id"
        ).fetchall()
    finally:
        con.close()
    assert [(r[0], r[1]) for r in rows] == [
        ("gate_score_in_range", "passed"),
        ("gate_score_present", "passed"),
        ("gate_unique", "blocking"),
    ]
    assert {r[2] for r in rows} == {result.run_id}


def test_contained_and_warn_failures_let_downstream_run_without_the_quarantined_rows(tmp_path):
    # one out-of-range score in ten: 10 %, under the default 20 % quarantine limit
    rows = [(f"qr-{i:02d}", float(i)) for i in range(1, 9)] + [("qr-09", 99.0), ("qr-10", None)]
    result, wh = _materialize(tmp_path, rows)
    assert result.success
    assert _materialized(result) == {"staging/measure_scores", "marts/downstream"}
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["gate_unique"].passed is True
    contained = evals["gate_score_in_range"]
    assert contained.passed is False and contained.severity == dg.AssetCheckSeverity.WARN
    assert contained.metadata["outcome"].value == "contained"
    assert contained.metadata["quarantined"].value == 1
    assert contained.metadata["sample_keys"].value == ["qr-09"]
    assert evals["gate_score_present"].severity == dg.AssetCheckSeverity.WARN
    con = duckdb.connect(str(wh), read_only=True)
    try:
        kept = con.execute("SELECT response_id FROM marts.downstream ORDER BY 1").fetchall()
        quarantined = con.execute("SELECT record_key, run_id FROM quality.current_quarantine").fetchall()
    finally:
        con.close()
    assert [k for (k,) in kept] == [f"qr-{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 10)]
    assert quarantined == [("qr-09", result.run_id)]


def test_factory_builds_checks_for_the_pipeline_assets_with_severity_and_blocking():
    assets = [*raw_assets, *answer_assets]
    checks = build_quality_checks(assets)
    names = {c.node_def.name for c in checks}
    assert names == {
        "quality_raw_responses",
        "quality_raw_intake",
        "quality_staging_answers",
        "quality_measure_scores",
    }
    severity = {c.id: c.severity for s in load_suites() for c in s.checks}
    specs = [spec for c in checks for spec in c.check_specs]
    assert len(specs) == sum(1 for s in load_suites() if not s.name.startswith("mart_") for _ in s.checks)
    for spec in specs:
        assert spec.blocking == (severity[spec.name] == "ERROR"), spec.name
    # loads as a code location: no dependency cycles between checks and assets
    defs = dg.Definitions(
        assets=assets,
        asset_checks=checks,
        resources={
            "warehouse": WarehouseResource(path="unused.duckdb"),
            "fhir": dg.ResourceDefinition.none_resource(),
        },
    )
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.graph.node_names()


def test_mart_checks_appear_once_the_mart_asset_exists():
    spec = dg.AssetSpec(key=["marts", "qi_monthly"])
    checks = build_quality_checks([spec])
    assert [c.node_def.name for c in checks] == ["quality_mart_qi_monthly"]
    names = {s.name for s in checks[0].check_specs}
    assert "qi_monthly_small_cells_suppressed" in names


@pytest.mark.parametrize("suite_name", ["measure_scores", "raw_intake"])
def test_additional_deps_only_name_assets_that_exist(suite_name):
    suite = next(s for s in load_suites() if s.name == suite_name)
    present = {dg.AssetKey(["raw", "encounter"])}
    checks = build_suite_checks(suite, present)
    for spec in checks.check_specs:
        assert {d.asset_key for d in spec.additional_deps} <= present
