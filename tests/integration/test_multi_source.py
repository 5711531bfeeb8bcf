"""Several FHIR sources as partitions: two real servers pulled by two concurrent runs of the raw job
(multiprocess executor, the CLI a data engineer uses), each landing the right rows, with no lock
errors; then the new-data sensor asks for the downstream layers, which see both sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from demo.generator import GeneratorConfig, generate
from demo.loader import load_to_server
from demo.server import running_server
from pipelines.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAGSTER = str(Path(sys.executable).parent / "dagster")


def _execute(job: str, env: dict[str, str], partition: str | None = None) -> subprocess.Popen[str]:
    cmd = [DAGSTER, "job", "execute", "-m", "pipelines.definitions", "-j", job]
    if partition:
        cmd += ["--tags", json.dumps({"dagster/partition": partition})]
    return subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_sources_pulled_in_parallel_land_their_own_rows_without_lock_errors(tmp_path, monkeypatch):
    clinics = {
        "site_a": generate(GeneratorConfig(patients=8, seed=1, mess_rate=0.0)),
        "site_b": generate(GeneratorConfig(patients=6, seed=2, mess_rate=0.0)),
    }
    warehouse = tmp_path / "warehouse.duckdb"
    with running_server(tmp_path / "a") as a, running_server(tmp_path / "b") as b:
        load_to_server(a.base_url, clinics["site_a"])
        load_to_server(b.base_url, clinics["site_b"])
        sources_file = tmp_path / "sources.yaml"
        sources_file.write_text(
            yaml.safe_dump(
                {
                    "warehouse": str(warehouse),
                    "default_source": "site_a",
                    "sources": {
                        "site_a": {"kind": "rest", "base_url": a.base_url, "page_size": 50},
                        "site_b": {"kind": "rest", "base_url": b.base_url, "page_size": 50},
                    },
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FHIR_", "WAREHOUSE_"))}
        env.update(ALLIANCE_QI_SOURCES=str(sources_file), PYTHONPATH=str(REPO_ROOT))
        with dg.DagsterInstance.get():
            pass  # create the instance's SQLite storage once, before two processes race to do it
        runs = {name: _execute("raw_extract_job", env, name) for name in clinics}
        outputs = {name: p.communicate(timeout=600)[0] for name, p in runs.items()}

    for name, p in runs.items():
        assert p.returncode == 0, outputs[name][-3000:]
        assert "RUN_SUCCESS" in outputs[name]
        assert "Conflicting lock" not in outputs[name] and "cannot open warehouse" not in outputs[name]
        # the multiprocess executor ran the steps, each in its own process
        assert "multiprocess" in outputs[name].lower()

    with duckdb.connect(str(warehouse), read_only=True) as con:
        for name, clinic in clinics.items():
            for rtype, table in (("QuestionnaireResponse", "questionnaire_response"), ("Patient", "patient")):
                landed = {
                    r[0]
                    for r in con.execute(
                        f"SELECT id FROM raw.{table} WHERE source = ?",
                        [name],
                    ).fetchall()
                }
                assert landed == {r["id"] for r in clinic.of_type(rtype)}, (name, rtype)
        per_source = dict(
            con.execute(
                "SELECT source, count(DISTINCT resource_type) FROM raw.fetch_log GROUP BY 1"
            ).fetchall()
        )
        assert per_source == {"site_a": 10, "site_b": 10}
        # each source has its own watermark per type
        assert con.execute("SELECT count(*) FROM raw.watermarks").fetchall()[0][0] == 20

    # The new-data sensor sees both runs' new versions and asks for the downstream job once.
    monkeypatch.setenv("ALLIANCE_QI_SOURCES", str(sources_file))
    from pipelines.automation import build_jobs, build_new_data_sensor

    raw_keys = [dg.AssetKey(["raw", t]) for t in ("patient", "questionnaire_response", "questionnaire")]
    jobs = build_jobs(dg.StaticPartitionsDefinition(list(clinics)))
    sensor = build_new_data_sensor(raw_keys, jobs["downstream_job"])
    with dg.DagsterInstance.get() as instance:
        context = dg.build_sensor_context(instance=instance)
        first = list(sensor.evaluate_tick(context).run_requests)
        assert len(first) == 1 and int(first[0].tags["alliance_qi/new_versions"]) > 0
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=context.cursor))
        assert not again.run_requests and again.skip_message
