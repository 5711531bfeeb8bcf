"""Reruns skip what did not change, and still rebuild what did.

- a folder pull whose files are unchanged is not read again; a changed file is;
- a published copy is kept while its marts were not rebuilt, and written again when they were
  (or when its file is gone);
- a step that reads `quality.check_results` does not count the verdicts on its own tables;
- the instrument registry is parsed once per file version, each caller getting its own copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import orjson

from assets.publish import PUBLISHED_KEY, published_marts
from assets.raw import build_raw_asset, folder_files_state
from fhir_mappings import registry
from pipelines import build_state
from pipelines.automation import REFRESH_TAG
from pipelines.resources.fhir_source import FhirSourceConfig, FhirSourcesResource, WarehouseResource
from tests.support.generated_warehouse import generated_warehouse_file


def _patient(pid: str, version: str = "1") -> bytes:
    resource = {
        "resourceType": "Patient",
        "id": pid,
        "meta": {"versionId": version, "lastUpdated": f"2025-01-0{version}T00:00:00Z"},
        "gender": "female",
        "birthDate": "1980-01-01",
    }
    return orjson.dumps(resource) + b"\n"


def _pull(folder: Path, wh: Path, tags: dict[str, str] | None = None) -> dict[str, Any]:
    result = dg.materialize(
        [build_raw_asset("Patient")],
        resources={
            "fhir": FhirSourcesResource.single(name="site", kind="folder", folder=str(folder)),
            "warehouse": WarehouseResource(path=str(wh), landing_dir=str(wh.parent / "landing")),
        },
        tags=tags,
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}  # type: ignore[union-attr]


def _fetch_log_rows(wh: Path) -> int:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM raw.fetch_log").fetchall()[0][0])
    finally:
        con.close()


def test_an_unchanged_folder_is_not_read_again_and_a_changed_file_is(tmp_path):
    folder = tmp_path / "ndjson"
    folder.mkdir()
    (folder / "Patient.ndjson").write_bytes(_patient("a") + _patient("b"))
    (folder / "Encounter.ndjson").write_bytes(b"")  # another type's file: not part of the state
    wh = tmp_path / "wh.duckdb"

    first = _pull(folder, wh)
    assert not first.get("skipped") and first["new_versions"] == 2 and first["table_rows"] == 2
    logged = _fetch_log_rows(wh)

    second = _pull(folder, wh)
    assert second["skipped"] is True and second["new_versions"] == 0 and second["table_rows"] == 2
    assert _fetch_log_rows(wh) == logged  # the landing path did not run at all

    (folder / "Encounter.ndjson").write_bytes(b"\n\n")  # another type's file changed: still skipped
    assert _pull(folder, wh)["skipped"] is True

    with (folder / "Patient.ndjson").open("ab") as fh:
        fh.write(_patient("a", version="2"))
    third = _pull(folder, wh)
    assert not third.get("skipped") and third["new_versions"] == 1 and third["table_rows"] == 3
    assert _pull(folder, wh)["skipped"] is True

    full = _pull(folder, wh, tags={REFRESH_TAG: "full"})  # a full refresh always pulls
    assert not full.get("skipped") and full["table_rows"] == 3


def test_the_folder_state_lists_the_type_s_files_only(tmp_path):
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "Patient.ndjson").write_bytes(_patient("a"))
    (folder / "Encounter.ndjson").write_bytes(b"{}\n")
    (folder / "sub" / "bundle.json").write_bytes(b"{}")
    (folder / "notes.txt").write_text("not a resource file")
    source = FhirSourceConfig(name="s", kind="folder", folder=str(folder))
    state = folder_files_state(source, "Patient", "used_elements")
    assert state is not None
    assert set(state["files"]) == {"Patient.ndjson", "sub/bundle.json"}  # type: ignore[arg-type]
    before = build_state.fingerprint(state)
    os.utime(folder / "sub" / "bundle.json", ns=(1, 1))
    changed = folder_files_state(source, "Patient", "used_elements")
    assert changed is not None and build_state.fingerprint(changed) != before
    assert (
        folder_files_state(FhirSourceConfig(name="r", kind="rest", base_url="http://x"), "Patient", "")
        is None
    )


def _publish(wh: Path) -> dict[str, Any]:
    result = dg.materialize(
        [published_marts],
        resources={"warehouse": WarehouseResource(path=str(wh), landing_dir=str(wh.parent / "landing"))},
    )
    assert result.success
    events = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    return {k: v.value for k, v in events[PUBLISHED_KEY].items()}


def test_a_published_copy_is_kept_until_its_marts_change(tmp_path_factory, tmp_path, monkeypatch):
    wh = tmp_path / "data" / "warehouse.duckdb"
    wh.parent.mkdir()
    shutil.copy(generated_warehouse_file(tmp_path_factory), wh)
    monkeypatch.delenv("ALLIANCE_QI_PUBLISH_DIR", raising=False)
    published = tmp_path / "data" / "published" / "marts.duckdb"

    first = _publish(wh)
    assert not first.get("skipped")
    stamp = published.stat().st_mtime_ns

    second = _publish(wh)
    assert second["skipped"] is True and second["row_counts"] == first["row_counts"]
    assert published.stat().st_mtime_ns == stamp

    # A mart rebuilt from other inputs (its recorded fingerprint moves): published again.
    con = duckdb.connect(str(wh))
    try:
        build_state.record(con, "marts.qi_monthly", {"changed": True}, "test-run")
    finally:
        con.close()
    assert not _publish(wh).get("skipped")
    assert _publish(wh)["skipped"] is True

    published.unlink()  # the copy is gone: written again
    assert not _publish(wh).get("skipped")
    assert published.exists()


def test_a_step_does_not_count_the_verdicts_on_its_own_tables():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA quality")
    con.execute("CREATE TABLE quality.check_results (table_name VARCHAR, checked_at TIMESTAMPTZ)")
    con.execute(
        "INSERT INTO quality.check_results VALUES ('staging.x', TIMESTAMPTZ '2026-01-01 00:00:00+00')"
    )
    state = build_state.input_state(con, ["quality.check_results"], own_outputs=["marts.report"])
    con.execute(
        "INSERT INTO quality.check_results VALUES ('marts.report', TIMESTAMPTZ '2026-01-02 00:00:00+00')"
    )
    assert build_state.input_state(con, ["quality.check_results"], own_outputs=["marts.report"]) == state
    # Any other table's new verdict is a change, and without own outputs every row counts.
    assert build_state.input_state(con, ["quality.check_results"]) != state
    con.execute(
        "INSERT INTO quality.check_results VALUES ('staging.x', TIMESTAMPTZ '2026-01-03 00:00:00+00')"
    )
    assert build_state.input_state(con, ["quality.check_results"], own_outputs=["marts.report"]) != state


def test_registry_files_are_parsed_once_and_copies_are_independent(tmp_path, monkeypatch):
    first = registry.load_registry(tmp_path)
    parsed = dict(registry._PARSED)
    second = registry.load_registry(tmp_path)
    assert registry._PARSED == parsed  # nothing parsed again
    assert registry.registry_fingerprint(first) == registry.registry_fingerprint(second)
    path = next(iter(sorted(registry.SHIPPED_DIR.glob("*.yaml"))))
    one, two = registry._read(path), registry._read(path)
    assert one == two and one is not two
    one["id"] = "mutated"
    assert registry._read(path)["id"] != "mutated"


def test_the_raw_ddl_runs_once_per_warehouse_until_it_changes(monkeypatch):
    from pipelines import warehouse

    con = duckdb.connect()
    warehouse.ensure_raw_schema(con)
    assert warehouse._raw_schema_current(con)
    sent: list[object] = []
    real = warehouse.run_sql
    monkeypatch.setattr(warehouse, "run_sql", lambda *a, **k: sent.append(a[1]) or real(*a, **k))
    warehouse.ensure_raw_schema(con)
    assert sent == []  # nothing sent: the recorded DDL hash matches
    con.execute("DROP TABLE raw.patient")  # a table gone: the DDL runs again and recreates it
    warehouse.ensure_raw_schema(con)
    assert sent and con.execute("SELECT count(*) FROM raw.patient").fetchall() == [(0,)]
    sent.clear()
    monkeypatch.setattr(warehouse, "_raw_schema_digest", lambda: "a new migration")
    warehouse.ensure_raw_schema(con)
    assert sent  # a changed DDL is sent again
