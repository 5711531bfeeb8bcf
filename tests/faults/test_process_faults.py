"""The pipeline process killed (SIGKILL) mid-pull, mid-load and mid-Bulk-download, then run again;
and the warehouse file held open by a reader in another process."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import requests

from demo.server import FhirServer
from pipelines.settings import REPO_ROOT
from pipelines.warehouse import Warehouse
from tests.faults.proxy import FaultProxy, Hold
from tests.faults.runner import RUNNER_TOKEN_ENV
from tests.faults.support import (
    PAGE_SIZE,
    LogJournal,
    event_text,
    landing_file,
    page_query,
    run_raw,
    snapshot,
    source,
)

pytestmark = pytest.mark.integration

QR_TYPE = "QuestionnaireResponse"
QR = r"/fhir/QuestionnaireResponse$"
# Safety net for waiting on another process; not a performance bound (the waits end much sooner).
PATIENCE_S = 180.0


@contextlib.contextmanager
def pipeline_process(
    tmp_path: Path,
    journal: LogJournal,
    base_url: str,
    warehouse: Path,
    *extra: str,
    env_extra: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m tests.faults.runner` in its own process group; its output joins the log journal."""
    log_file = tmp_path / f"runner-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env_extra or {})}
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.runner", base_url, str(warehouse), *extra],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        journal.add_text(log_file.read_text(errors="replace"))


def _kill(process: subprocess.Popen[bytes]) -> None:
    assert process.poll() is None, "the pipeline finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def _wait_for(condition, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert process.poll() is None, f"the pipeline exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_mid_pull_then_rerun_equals_clean(
    tmp_path: Path, proxy: FaultProxy, log_journal: LogJournal, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    # A bearer token (the server does not check it, the proxy records it): the killed process's
    # own output, DEBUG included, joins the log journal that must not contain it.
    token = f"fault-suite-{secrets.token_urlsafe(24)}"
    proxy.add(Hold(), QR, query=page_query(4))
    with pipeline_process(
        tmp_path,
        log_journal,
        proxy.base_url,
        warehouse,
        "--batch-size",
        str(PAGE_SIZE),
        env_extra={RUNNER_TOKEN_ENV: token},
    ) as process:
        _wait_for(proxy.held.is_set, process, "page 4 of QuestionnaireResponse was requested")
        _kill(process)
    proxy.clear()
    proxy.release.set()
    assert token in proxy.secrets

    # Three pages of responses were committed to the landing file, the pull never finished: no
    # watermark, no fetch_log, and nothing merged into the warehouse.
    killed = snapshot(landing_file(warehouse, QR_TYPE))
    killed.assert_sound()
    landed = killed.rows[QR_TYPE]
    assert 0 < len(landed) < len(clean.rows[QR_TYPE]) and landed <= clean.rows[QR_TYPE]
    assert QR_TYPE not in killed.watermarks and all(r[1] != QR_TYPE for r in killed.fetch_log)

    rerun = run_raw(source(proxy.base_url, auth_mode="bearer", token=token), warehouse)
    assert rerun.success
    log_journal.add_text(event_text(rerun))
    after = snapshot(warehouse)
    after.assert_equals(clean)
    qr_log = [r for r in after.fetch_log if r[1] == QR_TYPE]
    assert len(qr_log) == 1 and qr_log[0][5] == len(landed)  # the committed part was "unchanged"


@pytest.mark.slow
def test_killed_inside_a_load_transaction_then_rerun_equals_clean(
    tmp_path: Path, upstream: FhirServer, log_journal: LogJournal, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    marker = tmp_path / "paused-before-commit"
    with pipeline_process(
        tmp_path,
        log_journal,
        upstream.base_url,
        warehouse,
        "--batch-size",
        str(PAGE_SIZE),
        "--pause-before-commit",
        f"{QR_TYPE}:3",
        "--marker",
        str(marker),
    ) as process:
        _wait_for(marker.exists, process, "the third QuestionnaireResponse batch was inserted")
        _kill(process)

    def page_ids(number: int) -> set[str]:
        params = {"_count": str(PAGE_SIZE), **({} if number == 1 else page_query(number))}
        bundle = requests.get(f"{upstream.base_url}/QuestionnaireResponse", params=params, timeout=10).json()
        return {e["resource"]["id"] for e in bundle["entry"]}

    # Batches 1 and 2 (pages 1 and 2) were committed to the landing file; batch 3 was inserted but
    # not committed, and after the kill none of it is there: not in the table, not among the rejections.
    killed = snapshot(landing_file(warehouse, QR_TYPE))
    killed.assert_sound()
    landed_ids = {i for i, _, _ in killed.rows[QR_TYPE]}
    rejected_ids = {i for t, i, _ in killed.rejected if t == QR_TYPE}
    assert landed_ids | rejected_ids == page_ids(1) | page_ids(2)
    assert not (landed_ids | rejected_ids) & page_ids(3)
    assert QR_TYPE not in killed.watermarks

    assert run_raw(source(upstream.base_url), warehouse).success
    snapshot(warehouse).assert_equals(clean)


@pytest.mark.slow
def test_killed_during_a_bulk_download_resumes_the_same_export(
    tmp_path: Path, proxy: FaultProxy, log_journal: LogJournal, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    landing = tmp_path / "landing"
    proxy.add(Hold(), r"/fhir/bulk-files/.*/QuestionnaireResponse\.ndjson$")
    with pipeline_process(
        tmp_path,
        log_journal,
        proxy.base_url,
        warehouse,
        "--kind",
        "bulk",
        "--landing",
        str(landing),
        "--types",
        QR_TYPE,
    ) as process:
        _wait_for(proxy.held.is_set, process, "the QuestionnaireResponse file was requested")
        _kill(process)
    proxy.clear()
    proxy.release.set()
    with duckdb.connect(str(landing_file(warehouse, QR_TYPE)), read_only=True) as con:
        saved = con.execute("SELECT key, state->>'status_url' FROM raw.bulk_jobs").fetchall()
    assert len(saved) == 1 and saved[0][0] == f"faults:{QR_TYPE}"

    rerun = run_raw(source(proxy.base_url, kind="bulk", landing_dir=str(landing)), warehouse, (QR_TYPE,))
    assert rerun.success
    assert len(proxy.seen(r"/fhir/\$export$")) == 1  # resumed: no second export was kicked off
    assert saved[0][1].startswith(proxy.origin) and proxy.seen(saved[0][1].removeprefix(proxy.origin))
    snapshot(warehouse).assert_equals(clean, (QR_TYPE,))


READER = """
import sys, time, duckdb
path, marker, released, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
con = duckdb.connect(path, read_only=True)
open(marker, "w").write("reading")
time.sleep(hold)
released_at = time.time()  # taken while the lock is still held: the run cannot start before it
con.close()
open(released, "w").write(repr(released_at))
"""


@contextlib.contextmanager
def reader_process(
    tmp_path: Path, warehouse: Path, hold_s: float
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Another process holding the warehouse open read-only (a BI tool pointed at the wrong file)."""
    marker, released = tmp_path / "reader-has-it", tmp_path / "reader-released"
    process = subprocess.Popen(
        [sys.executable, "-c", READER, str(warehouse), str(marker), str(released), str(hold_s)],
        start_new_session=True,
    )
    try:
        _wait_for(marker.exists, process, "the reader opened the warehouse")
        yield process, released
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow
def test_reader_holding_the_warehouse_makes_the_run_wait_then_succeed(
    tmp_path: Path, upstream: FhirServer, clean
) -> None:
    warehouse = tmp_path / "w.duckdb"
    with Warehouse(warehouse).connect():
        pass  # the file exists, as it does after the first run
    with reader_process(tmp_path, warehouse, hold_s=3.0) as (reader, released):
        assert reader.poll() is None  # the reader holds the file as the run starts
        result = run_raw(source(upstream.base_url), warehouse)
        assert reader.wait(timeout=PATIENCE_S) == 0
    assert result.success
    # Pulls land in their own files while the reader holds the warehouse; the merges waited for the
    # lock instead of failing, and after them the warehouse equals a clean run's.
    released_at = datetime.fromtimestamp(float(released.read_text()), tz=UTC)
    assert released_at <= datetime.now(UTC)
    snapshot(warehouse).assert_equals(clean)


def test_reader_holding_the_warehouse_past_the_lock_timeout_is_a_clear_error(tmp_path: Path) -> None:
    warehouse = tmp_path / "w.duckdb"
    with Warehouse(warehouse).connect():
        pass
    with reader_process(tmp_path, warehouse, hold_s=PATIENCE_S) as (reader, _):
        with pytest.raises(RuntimeError) as raised, Warehouse(warehouse, lock_timeout_s=1.0).connect():
            pass
        message = str(raised.value)
        assert f"cannot open warehouse {warehouse}" in message
        assert "lock" in message and f"PID {reader.pid}" in message  # who holds it
        assert "Only the pipeline may write it" in message
    with Warehouse(warehouse, lock_timeout_s=1.0).connect() as con:  # the reader is gone: it opens
        assert con.execute("SELECT count(*) FROM raw.fetch_log").fetchall() == [(0,)]
