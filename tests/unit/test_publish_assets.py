"""The Dagster wiring of publishing: `published/marts` and `reports/qi_report` (group `published`) fit
the code location's asset graph (every dependency exists), and materialising them writes the published
file, the Parquet files and the report where the environment says, with their metadata."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from assets.checks import build_quality_checks
from assets.marts import mart_assets
from assets.publish import PUBLISHED_KEY, REPORT_KEY, RESTRICTED_KEY, publish_assets
from assets.raw import raw_assets
from assets.staging import staging_assets
from marts.build import BI_MARTS, RESTRICTED_MARTS
from marts.publish import published_row_counts
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource
from tests.support.generated_warehouse import generated_warehouse_file


def test_the_publish_assets_fit_the_asset_graph(tmp_path):
    everything = [*raw_assets, *staging_assets, *mart_assets]
    defs = dg.Definitions(
        assets=[*everything, *publish_assets],
        asset_checks=build_quality_checks(everything),
        resources={
            "fhir": FhirSourcesResource.single(name="demo", base_url="http://127.0.0.1:9"),
            "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        },
    )
    graph = defs.resolve_asset_graph()
    bi_keys = {dg.AssetKey(["marts", m]) for m in BI_MARTS}
    restricted_keys = {dg.AssetKey(["marts", m]) for m in RESTRICTED_MARTS}
    assert graph.get(PUBLISHED_KEY).parent_keys == bi_keys
    assert graph.get(RESTRICTED_KEY).parent_keys == restricted_keys
    # the report reads aggregates only: no record-level mart among its inputs
    assert graph.get(REPORT_KEY).parent_keys == bi_keys | {dg.AssetKey(["staging", "measure_scores"])}
    for key in (PUBLISHED_KEY, RESTRICTED_KEY, REPORT_KEY):
        assert graph.get(key).group_name == "published"
        # every parent is an asset of the code location, not an unresolved external key
        assert all(graph.has(k) and graph.get(k).is_materializable for k in graph.get(key).parent_keys)
    # the main job (AssetSelection.all) reaches them after the marts
    upstream = graph.upstream_key_iterator(REPORT_KEY)
    assert dg.AssetKey(["raw", "questionnaire_response"]) in set(upstream)


def test_materialising_publishes_and_writes_the_report(tmp_path_factory, tmp_path, monkeypatch):
    source = generated_warehouse_file(tmp_path_factory)
    wh = tmp_path / "data" / "warehouse.duckdb"
    wh.parent.mkdir()
    shutil.copy(source, wh)
    report = tmp_path / "reports" / "qi_report.html"
    monkeypatch.setenv("ALLIANCE_QI_REPORT_PATH", str(report))
    monkeypatch.delenv("ALLIANCE_QI_PUBLISH_DIR", raising=False)
    result = dg.materialize(
        publish_assets,
        resources={"warehouse": WarehouseResource(path=str(wh), landing_dir=str(tmp_path / "landing"))},
    )
    assert result.success
    published = tmp_path / "data" / "published"  # beside the warehouse by default
    counts = published_row_counts(published / "marts.duckdb")
    assert set(counts) == {*BI_MARTS, "_published"} and all(counts.values())
    assert len(list((published / "parquet").glob("*.parquet"))) == len(BI_MARTS) + 1
    restricted = tmp_path / "data" / "restricted"
    restricted_counts = published_row_counts(restricted / "marts.duckdb")
    assert set(restricted_counts) == {*RESTRICTED_MARTS, "_published"} and all(restricted_counts.values())
    events = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    meta = events[PUBLISHED_KEY]
    assert meta["row_counts"].value == {m: counts[m] for m in BI_MARTS}
    assert events[RESTRICTED_KEY]["row_counts"].value == {m: restricted_counts[m] for m in RESTRICTED_MARTS}
    assert meta["storage_version"].value == "v1.0.0"
    html = report.read_text()
    assert 'data-chart="therapist_funnel"' in html
    report_meta = events[REPORT_KEY]
    assert report_meta["path"].value == str(report)
    assert set(report_meta["chart_marks"].value) >= {"monthly_kpis", "data_quality"}


@pytest.mark.parametrize("env_dir", ["bi-share"])
def test_the_publish_folder_follows_the_environment(tmp_path_factory, tmp_path, monkeypatch, env_dir):
    source = generated_warehouse_file(tmp_path_factory)
    wh = tmp_path / "warehouse.duckdb"
    shutil.copy(source, wh)
    target = tmp_path / env_dir
    monkeypatch.setenv("ALLIANCE_QI_PUBLISH_DIR", str(target))
    result = dg.materialize(
        [publish_assets[0]],
        resources={"warehouse": WarehouseResource(path=str(wh), landing_dir=str(tmp_path / "landing"))},
    )
    assert result.success
    assert (target / "marts.duckdb").exists()
    assert not (tmp_path / "published").exists()
