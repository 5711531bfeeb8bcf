"""File permissions: the warehouse (and its write-ahead log), landing files and Bulk downloads are
owner-only (0600) whatever the process umask; `private_umask` restores the umask it replaced."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.filemodes import private_umask
from pipelines.landing import landing_path
from pipelines.resources.fhir import BulkExporter, FhirClient, MemoryStateStore, RetryPolicy
from pipelines.warehouse import Warehouse
from tests.support.fhir_stub import FhirStub, Reply


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask (0022: files 0644), as on a default login, restored afterwards."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_warehouse_and_its_wal_are_owner_only(tmp_path, open_umask):
    path = tmp_path / "data" / "warehouse.duckdb"
    with Warehouse(path).connect() as con:
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
        wal = path.with_name(path.name + ".wal")
        assert wal.exists()  # written, not yet checkpointed: the log DuckDB created lazily
        assert _mode(wal) == 0o600
        assert _mode(path) == 0o600
    assert _mode(path) == 0o600
    assert os.umask(0o022) == 0o022  # the umask was restored after the connection closed


def test_an_existing_world_readable_warehouse_is_tightened(tmp_path, open_umask):
    path = tmp_path / "warehouse.duckdb"
    with Warehouse(path).connect():
        pass
    path.chmod(0o644)
    with Warehouse(path).connect(read_only=True) as con:
        assert con.execute("SELECT 1").fetchall() == [(1,)]
    assert _mode(path) == 0o600


def test_landing_files_are_owner_only(tmp_path, open_umask):
    land = landing_path(tmp_path / "landing", "demo", "Patient")
    with Warehouse(land).connect() as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    assert land.exists() and _mode(land) == 0o600


def test_nested_private_umasks_restore_the_outer_umask(open_umask):
    with private_umask():
        with private_umask():
            assert os.umask(0o077) == 0o077
        assert os.umask(0o077) == 0o077  # still inside the outer block
    assert os.umask(0o022) == 0o022


def test_bulk_downloads_are_owner_only(tmp_path, open_umask):
    body = '{"resourceType": "Patient", "id": "p1"}\n'
    with FhirStub() as stub:
        stub.route("GET", "$export", Reply(202, headers={"Content-Location": f"{stub.root_url}/status/j"}))
        manifest = {
            "transactionTime": "2024-05-01T12:00:00Z",
            "request": f"{stub.base_url}/$export",
            "requiresAccessToken": False,
            "output": [{"type": "Patient", "url": f"{stub.root_url}/files/p.ndjson"}],
            "error": [],
        }
        stub.route("GET", "/status/j", Reply(body=manifest, content_type="application/json"))
        stub.route("DELETE", "/status/j", Reply(202))
        stub.route("GET", "/files/p.ndjson", Reply(body=body, content_type="application/fhir+ndjson"))
        sleeps: list[float] = []
        client = FhirClient(stub.base_url, retry=RetryPolicy(sleep=sleeps.append))
        out = tmp_path / "bulk"
        (out).mkdir(mode=0o755)
        exporter = BulkExporter(client, MemoryStateStore(), poll_interval=0.01, sleep=sleeps.append)
        result = exporter.export("k", ["Patient"], None, out)
    files = result.files["Patient"]
    assert files and files[0].read_text() == body
    assert {_mode(f) for f in files} == {0o600}
    assert _mode(out) == 0o700
