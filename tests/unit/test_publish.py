"""Publishing the marts for BI: a DuckDB file built aside and moved into place atomically, and one
Parquet file per mart, from a warehouse built on a generated clinic.

Proves: the published file is complete (row counts match the marts, tables addressable by plain
name, metadata table), a reader holding the old file keeps reading it consistently while a publish
replaces it and fresh readers only ever see a whole file, publishing twice is idempotent, nothing
published carries a FHIR id, and failures leave the published files and no temporary files behind.
"""

from __future__ import annotations

import shutil
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from marts.build import BI_MARTS, RESTRICTED_MARTS
from marts.publish import (
    METADATA_TABLE,
    PSEUDONYMS,
    PublishError,
    PublishSettingsError,
    publish_dir,
    publish_marts,
    published_row_counts,
    restricted_dir,
    storage_version,
)
from tests.support.generated_warehouse import FHIR_ID_PATTERNS, generated_warehouse_file


@pytest.fixture(scope="module")
def source_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_warehouse_file(tmp_path_factory)


@pytest.fixture
def warehouse(source_warehouse: Path, tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """A private, writable copy of the generated warehouse."""
    path = tmp_path / "wh" / "warehouse.duckdb"
    path.parent.mkdir()
    shutil.copy(source_warehouse, path)
    con = duckdb.connect(str(path))
    yield con
    con.close()


def _mart_counts(con: duckdb.DuckDBPyConnection, marts: tuple[str, ...] = BI_MARTS) -> dict[str, int]:
    return {m: con.execute(f"SELECT count(*) FROM marts.{m}").fetchall()[0][0] for m in marts}


def _attached(path: Path) -> duckdb.DuckDBPyConnection:
    """A fresh reader of the file now at `path` (ATTACH: not DuckDB's per-process instance cache)."""
    con = duckdb.connect()
    con.execute("ATTACH ? AS pub (READ_ONLY)", [str(path)])
    con.execute("USE pub")
    return con


def test_published_file_is_complete_and_addressable_by_plain_names(warehouse, tmp_path):
    out = tmp_path / "published"
    result = publish_marts(warehouse, out, run_id="run-1")
    marts = _mart_counts(warehouse)
    assert all(marts.values())
    assert result.row_counts == marts
    assert published_row_counts(out / "marts.duckdb") == {**marts, METADATA_TABLE: len(BI_MARTS)}
    reader = _attached(out / "marts.duckdb")
    try:
        # tables live in the default schema: plain names work, there is no `marts` schema
        schemas = {
            r[0] for r in reader.execute("SELECT DISTINCT schema_name FROM duckdb_tables()").fetchall()
        }
        assert schemas == {"main"}
        assert reader.execute("SELECT count(*) FROM qi_monthly").fetchall()[0][0] == marts["qi_monthly"]
        meta = reader.execute(
            "SELECT table_name, row_count, run_id, pseudonyms, storage_version, parquet_file "
            f"FROM {METADATA_TABLE}"
        ).fetchall()
        # the same columns and values, in the same order, as the warehouse mart
        for mart in BI_MARTS:
            assert (
                reader.execute(f"DESCRIBE {mart}").fetchall()
                == warehouse.execute(f"DESCRIBE marts.{mart}").fetchall()
            )
            assert (
                reader.execute(f"SELECT * FROM {mart} ORDER BY ALL").fetchall()
                == warehouse.execute(f"SELECT * FROM marts.{mart} ORDER BY ALL").fetchall()
            )
    finally:
        reader.close()
    assert {m[0]: m[1] for m in meta} == marts
    assert {(m[2], m[3], m[4]) for m in meta} == {("run-1", PSEUDONYMS, "v1.0.0")}
    assert {m[5] for m in meta} == {f"parquet/{m}.parquet" for m in BI_MARTS}
    # v1.0.0 storage (version number 64): readable by every DuckDB since 0.10, as BI drivers bundle
    header = struct.Struct("<8x4sQ").unpack((out / "marts.duckdb").read_bytes()[:20])
    assert header == (b"DUCK", 64)
    # one Parquet file per mart (plus the metadata), rows as in the mart; no temporary file left
    assert sorted(p.name for p in (out / "parquet").iterdir()) == sorted(
        [f"{m}.parquet" for m in BI_MARTS] + [f"{METADATA_TABLE}.parquet"]
    )
    for mart in BI_MARTS:
        n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out / 'parquet' / mart}.parquet')").fetchall()[
            0
        ][0]
        assert n == marts[mart], mart
    assert sorted(p.name for p in out.iterdir()) == ["marts.duckdb", "parquet"]
    assert not list(out.parent.glob("**/*.tmp")) and not list(out.glob("**/*.wal"))
    # the warehouse itself is untouched: nothing attached stays behind
    assert [
        r[0]
        for r in warehouse.execute(
            "SELECT database_name FROM duckdb_databases() WHERE NOT internal"
        ).fetchall()
    ] == ["warehouse"]


def test_publishing_twice_is_idempotent(warehouse, tmp_path):
    out = tmp_path / "published"
    publish_marts(warehouse, out, run_id="first")
    first = {}
    reader = _attached(out / "marts.duckdb")
    for mart in BI_MARTS:
        first[mart] = reader.execute(f"SELECT * FROM {mart}").fetchall()
    reader.close()
    parquet_first = {
        p.name: p.read_bytes() for p in (out / "parquet").iterdir() if p.name != "_published.parquet"
    }

    publish_marts(warehouse, out, run_id="second")
    reader = _attached(out / "marts.duckdb")
    try:
        for mart in BI_MARTS:
            # same rows in the same order (ORDER BY ALL at the copy)
            assert reader.execute(f"SELECT * FROM {mart}").fetchall() == first[mart], mart
        assert reader.execute(f"SELECT DISTINCT run_id FROM {METADATA_TABLE}").fetchall() == [("second",)]
    finally:
        reader.close()
    parquet_second = {
        p.name: p.read_bytes() for p in (out / "parquet").iterdir() if p.name != "_published.parquet"
    }
    assert parquet_second == parquet_first  # byte-identical Parquet
    assert sorted(p.name for p in out.iterdir()) == ["marts.duckdb", "parquet"]
    assert len(list((out / "parquet").iterdir())) == len(BI_MARTS) + 1


READER_SCRIPT = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
def snapshot():
    n = con.execute("SELECT count(*) FROM alliance_sessions").fetchall()[0][0]
    s = con.execute("SELECT sum(hash(session_key)) FROM alliance_sessions").fetchall()[0][0]
    m = con.execute("SELECT sum(row_count) FROM _published").fetchall()[0][0]
    print(n, s, m, flush=True)
snapshot()
sys.stdin.readline()   # the test publishes a new version meanwhile
snapshot()
"""


def test_a_reader_of_the_old_file_keeps_consistent_data_while_a_publish_replaces_it(warehouse, tmp_path):
    # the record-level target: its session rows change visibly between publishes
    out = tmp_path / "published"
    publish_marts(warehouse, out, run_id="v1", target="restricted")
    old_counts = published_row_counts(out / "marts.duckdb")
    # a BI tool in another process holds the published file open
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(out / "marts.duckdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = reader.stdout.readline().split()
        # the marts change, and a publish replaces the file the reader has open
        warehouse.execute("DELETE FROM marts.alliance_sessions WHERE session_number > 2")
        new_marts = _mart_counts(warehouse, RESTRICTED_MARTS)
        assert new_marts["alliance_sessions"] < old_counts["alliance_sessions"]
        publish_marts(warehouse, out, run_id="v2", target="restricted")
        reader.stdin.write("go\n")
        reader.stdin.flush()
        after = reader.stdout.readline().split()
        reader.stdin.close()
        assert reader.wait() == 0
    finally:
        if reader.poll() is None:
            reader.kill()
    # the old reader saw the whole old file, before and after the replace
    assert before == after
    assert int(before[0]) == old_counts["alliance_sessions"]
    # a new reader sees the whole new file
    assert published_row_counts(out / "marts.duckdb") == {**new_marts, METADATA_TABLE: len(RESTRICTED_MARTS)}


def test_fresh_readers_during_publishes_only_ever_see_a_whole_file(warehouse, tmp_path):
    out = tmp_path / "published"
    publish_marts(warehouse, out, run_id="v0", target="restricted")
    versions = [published_row_counts(out / "marts.duckdb")]
    done = threading.Event()
    seen: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def read_repeatedly() -> None:
        for _ in range(5000):  # bounded; stops as soon as the publishes are done
            try:
                seen.append(published_row_counts(out / "marts.duckdb"))
            except BaseException as exc:  # a half-written file would fail to open or read
                errors.append(exc)
            if done.is_set():
                return

    thread = threading.Thread(target=read_repeatedly)
    thread.start()
    try:
        for cut in (8, 5, 3):
            warehouse.execute("DELETE FROM marts.alliance_sessions WHERE session_number > ?", [cut])
            publish_marts(warehouse, out, run_id=f"cut-{cut}", target="restricted")
            versions.append(published_row_counts(out / "marts.duckdb"))
    finally:
        done.set()
        thread.join()
    assert not errors
    assert seen
    assert all(s in versions for s in seen)  # every read matched one complete publish
    assert len({v["alliance_sessions"] for v in versions}) == 4


@pytest.mark.parametrize(("target", "least_strings"), [("bi", 150), ("restricted", 3000)])
def test_nothing_published_carries_a_fhir_id(warehouse, tmp_path, target, least_strings):
    out = tmp_path / "published"
    publish_marts(warehouse, out, target=target)
    ids = {
        r[0]
        for t in (
            "patient",
            "practitioner",
            "practitioner_role",
            "encounter",
            "episode_of_care",
            "appointment",
            "questionnaire_response",
            "medication_request",
            "medication_dispense",
        )
        for r in warehouse.execute(f"SELECT DISTINCT id FROM raw.{t}").fetchall()
    }
    assert len(ids) > 1000
    reader = _attached(out / "marts.duckdb")
    try:
        reader.execute("CREATE TEMP TABLE fhir_ids AS SELECT unnest(?::VARCHAR[]) AS id", [sorted(ids)])
        columns = reader.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = 'pub' "
            "AND data_type = 'VARCHAR'"
        ).fetchall()
        assert len(columns) > 10
        strings = 0
        for table, column in columns:
            values = f'SELECT DISTINCT "{column}" AS v FROM pub.main."{table}" WHERE "{column}" IS NOT NULL'
            strings += reader.execute(f"SELECT count(*) FROM ({values})").fetchall()[0][0]
            for pattern in FHIR_ID_PATTERNS:
                hits = reader.execute(
                    f"SELECT v FROM ({values}) WHERE regexp_matches(v, ?) LIMIT 3", [pattern]
                ).fetchall()
                assert not hits, (table, column, hits)
            contained = reader.execute(
                f"SELECT v, id FROM ({values}) JOIN temp.fhir_ids ON contains(v, id) LIMIT 3"
            ).fetchall()
            assert not contained, (table, column, contained)
        assert strings > least_strings  # the scan looked at the pseudonyms and every other string value
    finally:
        reader.close()


def test_a_missing_mart_fails_clearly_and_changes_nothing(warehouse, tmp_path):
    out = tmp_path / "published"
    publish_marts(warehouse, out, run_id="good")
    before = (out / "marts.duckdb").read_bytes()
    warehouse.execute("DROP TABLE marts.qi_monthly")
    with pytest.raises(PublishError, match=r"marts\.qi_monthly"):
        publish_marts(warehouse, out, run_id="bad")
    assert (out / "marts.duckdb").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["marts.duckdb", "parquet"]


def test_a_failure_while_moving_into_place_leaves_no_temporary_files(warehouse, tmp_path, monkeypatch):
    out = tmp_path / "published"
    publish_marts(warehouse, out, run_id="good")
    before = (out / "marts.duckdb").read_bytes()
    parquet_before = {p.name: p.read_bytes() for p in (out / "parquet").iterdir()}

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr("marts.publish.os.replace", refuse)
    with pytest.raises(OSError, match="simulated"):
        publish_marts(warehouse, out, run_id="bad")
    monkeypatch.undo()
    assert (out / "marts.duckdb").read_bytes() == before
    assert {p.name: p.read_bytes() for p in (out / "parquet").iterdir()} == parquet_before
    assert sorted(p.name for p in out.iterdir()) == ["marts.duckdb", "parquet"]
    # and the connection is usable, with nothing left attached
    assert [
        r[0]
        for r in warehouse.execute(
            "SELECT database_name FROM duckdb_databases() WHERE NOT internal"
        ).fetchall()
    ] == ["warehouse"]


def test_publish_folder_and_storage_version_settings(tmp_path):
    wh = tmp_path / "data" / "warehouse.duckdb"
    assert publish_dir(wh, env={}) == (tmp_path / "data" / "published").resolve()
    assert (
        publish_dir(wh, env={"ALLIANCE_QI_PUBLISH_DIR": str(tmp_path / "bi")}) == (tmp_path / "bi").resolve()
    )
    assert storage_version(env={}) == "v1.0.0"
    assert storage_version(env={"ALLIANCE_QI_PUBLISH_STORAGE_VERSION": "v1.2.0"}) == "v1.2.0"
    with pytest.raises(PublishError, match="STORAGE_VERSION"):
        storage_version(env={"ALLIANCE_QI_PUBLISH_STORAGE_VERSION": "v1'); DROP TABLE x; --"})


def test_each_target_holds_only_its_declared_marts_with_its_file_modes(warehouse, tmp_path):
    bi = publish_marts(warehouse, tmp_path / "published", run_id="r")
    restricted = publish_marts(warehouse, tmp_path / "restricted", run_id="r", target="restricted")
    assert set(bi.row_counts) == set(BI_MARTS)
    assert set(restricted.row_counts) == set(RESTRICTED_MARTS)
    # no record-level mart in the BI folder, as a table or as a Parquet file
    assert set(published_row_counts(bi.database)) == {*BI_MARTS, METADATA_TABLE}
    assert not {p.stem for p in bi.parquet_dir.iterdir()} & set(RESTRICTED_MARTS)
    for result, file_mode, dir_mode in ((bi, 0o640, 0o750), (restricted, 0o600, 0o700)):
        files = [result.database, *result.parquet_dir.iterdir()]
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {file_mode}
        for folder in (result.database.parent, result.parquet_dir):
            assert stat.S_IMODE(folder.stat().st_mode) == dir_mode


def test_a_record_level_mart_is_refused_by_the_bi_target(warehouse, tmp_path):
    with pytest.raises(PublishError, match="declared for the restricted target"):
        publish_marts(warehouse, tmp_path / "published", marts=("therapist_alliance", "episode_outcomes"))
    assert not (tmp_path / "published" / "marts.duckdb").exists()


def test_the_restricted_folder_follows_the_environment_and_differs_from_the_bi_folder(tmp_path):
    wh = tmp_path / "data" / "warehouse.duckdb"
    assert restricted_dir(wh, env={}) == (tmp_path / "data" / "restricted").resolve()
    env = {"ALLIANCE_QI_PUBLISH_RESTRICTED_DIR": str(tmp_path / "secure")}
    assert restricted_dir(wh, env=env) == (tmp_path / "secure").resolve()
    same = {
        "ALLIANCE_QI_PUBLISH_DIR": str(tmp_path / "x"),
        "ALLIANCE_QI_PUBLISH_RESTRICTED_DIR": str(tmp_path / "x"),
    }
    with pytest.raises(PublishSettingsError, match="RESTRICTED_DIR"):
        restricted_dir(wh, env=same)
