"""Beyond one machine, with real processes: Postgres instance storage, a Redis broker, the Dagster
daemon and two Celery workers (`demo.distributed.Cluster`, what `make demo-distributed` starts), all
on 127.0.0.1 with their data under the test's temporary folder, stopped even when a test fails.

The code location is `tests.support.raw_location`: the raw pulls on the Celery executor, and the same
pulls on the in-process executor for the reference warehouse. Each test compares the distributed
run's raw tables with the in-process run's, row for row (run ids and wall-clock stamps aside).

Two FHIR sources: `site_a` behind the fault proxy (tests/faults/proxy.py), which holds a
QuestionnaireResponse page while a test kills a worker or restarts Postgres, and `site_b` direct.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from demo.distributed import Cluster, two_source_file
from demo.generator import GeneratorConfig, generate
from demo.loader import load_to_server
from demo.server import FhirServer, running_server
from pipelines.settings import REPO_ROOT
from tests.faults.proxy import FaultProxy, Hold, running_proxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODULE = "tests.support.raw_location"
SOURCES = ("site_a", "site_b")
QR_STEP = "raw__questionnaire_response"
# Wall-clock stamps and run ids differ between any two runs; every other column must be equal.
VOLATILE = {"run_id", "fetched_at", "rejected_at", "found_at", "started_at", "finished_at", "updated_at"}
VOLATILE |= {"landed_at", "checked_at"}


@dataclass
class Setup:
    cluster: Cluster
    proxy: FaultProxy
    warehouse: Path
    reference: Path


def _in_process(job_env: dict[str, str], source: str) -> None:
    cmd = [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", MODULE]
    cmd += ["-j", "raw_extract_in_process", "--tags", json.dumps({"dagster/partition": source})]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=job_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("distributed")
    with (
        running_server(root / "fhir-a") as a,
        running_server(root / "fhir-b") as b,
        running_proxy(a.base_url) as proxy,
    ):
        load_to_server(a.base_url, generate(GeneratorConfig(patients=40, seed=7, mess_rate=0.03)))
        load_to_server(b.base_url, generate(GeneratorConfig(patients=25, seed=8, mess_rate=0.03)))
        sources = _sources(proxy, b)
        # The reference: the same pulls on the in-process executor, with the SQLite instance.
        reference = root / "reference" / "warehouse.duckdb"
        ref_file = two_source_file(root / "reference.yaml", reference, sources)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FHIR_", "WAREHOUSE_"))}
        env.update(ALLIANCE_QI_SOURCES=str(ref_file), PYTHONPATH=str(REPO_ROOT))
        for name in SOURCES:
            _in_process(env, name)
        warehouse = root / "distributed" / "warehouse.duckdb"
        dist_file = two_source_file(root / "distributed.yaml", warehouse, sources)
        with Cluster(
            root / "services", module=MODULE, extra_env={"ALLIANCE_QI_SOURCES": str(dist_file)}
        ) as c:
            yield Setup(c, proxy, warehouse, reference)


def _sources(proxy: FaultProxy, b: FhirServer) -> dict[str, dict[str, object]]:
    # Small pages, so a pull spans several requests and a hold lands mid-step.
    return {
        "site_a": {"kind": "rest", "base_url": proxy.base_url, "page_size": 50},
        "site_b": {"kind": "rest", "base_url": b.base_url, "page_size": 50},
    }


@pytest.fixture
def fresh(setup: Setup) -> Setup:
    """An empty warehouse and landing folder, both workers up, no proxy faults."""
    shutil.rmtree(setup.warehouse.parent, ignore_errors=True)
    setup.proxy.clear()
    setup.proxy.held.clear()
    setup.proxy.release.clear()
    for name in setup.cluster.workers:
        proc = setup.cluster.worker_procs.get(name)
        if proc is None or proc.poll() is not None:
            setup.cluster.start_worker(name)
    return setup


def raw_rows(warehouse: Path, sources: tuple[str, ...]) -> dict[str, list[tuple[object, ...]]]:
    """Every raw table's rows of these sources, sorted, without the volatile columns."""
    out: dict[str, list[tuple[object, ...]]] = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw' ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' "
                    "AND table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
            ]
            keep = [c for c in cols if c not in VOLATILE]
            select = ", ".join(f'CAST("{c}" AS VARCHAR)' for c in keep)
            if "source" in cols:
                marks = ", ".join("?" for _ in sources)
                sql = f'SELECT {select} FROM raw."{table}" WHERE source IN ({marks})'
                rows = con.execute(sql, list(sources)).fetchall()
            elif "key" in cols:  # raw.bulk_jobs: key = source:ResourceType
                rows = [
                    r
                    for r in con.execute(f'SELECT {select} FROM raw."{table}"').fetchall()
                    if str(r[0]).split(":")[0] in sources
                ]
            else:
                rows = con.execute(f'SELECT {select} FROM raw."{table}"').fetchall()
            out[table] = sorted(rows, key=repr)
    return out


def assert_same_raw(setup: Setup, sources: tuple[str, ...]) -> None:
    got, want = raw_rows(setup.warehouse, sources), raw_rows(setup.reference, sources)
    assert set(got) == set(want)
    assert sum(len(v) for v in want.values()) > 500  # the comparison is of real data
    for table in want:
        assert got[table] == want[table], f"raw.{table} differs from the in-process run"


def _worker_logs(cluster: Cluster) -> str:
    return "".join((cluster.log_dir / f"{n}.log").read_text() for n in cluster.workers)


def _wait_for(predicate: object, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


def test_two_sources_fan_out_to_two_workers_and_equal_the_in_process_run(fresh: Setup) -> None:
    cluster = fresh.cluster
    runs = {name: cluster.launch("raw_extract_job", name) for name in SOURCES}
    final = {name: cluster.wait(run_id, timeout=900) for name, run_id in runs.items()}
    for name, (run_id, status) in final.items():
        assert status == "SUCCESS", (name, run_id)
        assert run_id == runs[name]  # no retry was needed
    where = {name: cluster.step_workers(run_id) for name, (run_id, _) in final.items()}
    with cluster.instance() as instance:
        for name, (run_id, _) in final.items():
            succeeded = {
                r.dagster_event.step_key
                for r in instance.all_logs(run_id)
                if r.dagster_event is not None and r.dagster_event.event_type_value == "STEP_SUCCESS"
            }
            assert {QR_STEP, "raw__patient", "raw__questionnaire"} <= succeeded
            assert set(where[name]) == succeeded, name  # every step ran on a Celery worker
    workers = {w.split("@")[0] for steps in where.values() for w in steps.values()}
    assert workers == {"worker1", "worker2"}, where
    logs = _worker_logs(cluster)
    assert "Conflicting lock" not in logs and "cannot open warehouse" not in logs
    # per-source landing files, merged into the one warehouse
    landing = fresh.warehouse.parent / "warehouse.landing"
    assert {p.name for p in landing.iterdir()} >= set(SOURCES)
    assert_same_raw(fresh, SOURCES)


def test_a_worker_killed_mid_step_is_retried_on_the_other_and_the_warehouse_is_identical(
    fresh: Setup,
) -> None:
    cluster, proxy = fresh.cluster, fresh.proxy
    proxy.add(Hold(120), r"/QuestionnaireResponse$")
    first = cluster.launch("raw_extract_job", "site_a")
    _wait_for(proxy.held.is_set, "the QuestionnaireResponse pull to reach the proxy")
    _wait_for(lambda: QR_STEP in cluster.step_workers(first), "the step's worker to be recorded")
    victim = cluster.step_workers(first)[QR_STEP].split("@")[0]
    survivor = next(n for n in cluster.workers if n != victim)
    # Kill the process running the step (as the OOM killer would), then take its worker down.
    children = cluster.worker_children(victim)
    assert children, f"{victim} has no pool process"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: "WorkerLostError" in (cluster.log_dir / f"{victim}.log").read_text(), "WorkerLostError")
    proc = cluster.worker_procs[victim]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)
    proxy.release.set()

    final_id, status = cluster.wait(first, timeout=900)
    assert status == "SUCCESS"
    assert final_id != first  # the daemon's run retry finished the job
    with cluster.instance() as instance:
        assert instance.get_run_by_id(first).status.value == "FAILURE"
    retried = cluster.step_workers(final_id)
    assert retried[QR_STEP].split("@")[0] == survivor
    assert_same_raw(fresh, ("site_a",))


def test_postgres_restarted_mid_run_the_run_finishes_and_the_warehouse_is_identical(fresh: Setup) -> None:
    cluster, proxy = fresh.cluster, fresh.proxy
    assert cluster.postgres is not None
    proxy.add(Hold(120), r"/QuestionnaireResponse$")
    runs = {name: cluster.launch("raw_extract_job", name) for name in SOURCES}
    _wait_for(proxy.held.is_set, "the QuestionnaireResponse pull of site_a to reach the proxy")
    with cluster.instance() as instance:
        assert instance.get_run_by_id(runs["site_a"]).status.value == "STARTED"  # restarted mid-run
    cluster.postgres.restart()  # every open connection of the daemon, the run and the workers drops
    proxy.release.set()
    outcomes = {}
    for name, run_id in runs.items():
        final_id, status = cluster.wait(run_id, timeout=900)
        if status != "SUCCESS":
            # Not survived: the failure must say what happened, and the run must be resumable.
            with cluster.instance() as instance:
                text = " ".join(str(r.message) for r in instance.all_logs(final_id))
            assert "OperationalError" in text or "connection" in text.lower(), text[-2000:]
            final_id, status = cluster.wait(cluster.launch("raw_extract_job", name), timeout=900)
        outcomes[name] = (run_id, final_id, status)
    assert all(status == "SUCCESS" for _, _, status in outcomes.values()), outcomes
    # Which way it went (launched run, final run, status), for docs/deployment.md.
    print(f"postgres restart outcomes: {outcomes}")
    assert_same_raw(fresh, SOURCES)
