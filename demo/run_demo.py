"""`make demo`: the main job end to end on the embedded default.

1. start the embedded FHIR server (sekmet-fhir) on 127.0.0.1 with a fresh data folder;
2. generate the synthetic clinic (deterministic by seed) and load it with transaction Bundles;
3. run the Dagster main job against it (recorded in the Dagster instance under .dagster_home, so
   `make dev` shows the run);
4. print a summary: rows per table, rejections by reason, where the warehouse is (its queries are
   `demo/sql/*.sql`).

`--mode` (`make demo MODE=...`) picks how the pipeline reaches the clinic's data, as a real EHR would
allow it (docs/ehr-access.md): `system` (default) searches the server directly; `group-bulk` and
`patient-rest` go through `demo/ehr_proxy.py`, which makes the server behave like an EHR with
Group-level Bulk only and patient-scoped searches only, and pull with `bulk.level: group` or
`search_scope: patient` from the clinic's Group (`Group/clinic`, created here). All three land the
same raw rows and print the same counts.

The warehouse persists between runs: a second `make demo` reloads the same data into a fresh
server and the pipeline lands no new versions (idempotent raw layer).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from demo.server import FhirServer, free_port
from demo.summary import quality_summary, summarize

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("alliance_qi.demo")

#: The environment each `--mode` sets for the default source (docs/configuration.md).
MODES: dict[str, dict[str, str]] = {
    "system": {},
    "group-bulk": {"FHIR_SOURCE_KIND": "bulk", "FHIR_BULK_LEVEL": "group", "FHIR_BULK_GROUP": "clinic"},
    "patient-rest": {"FHIR_SEARCH_SCOPE": "patient", "FHIR_PATIENT_GROUP": "clinic"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the main job on the embedded FHIR server")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--mess-rate", type=float, default=0.03)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--keep-server", action="store_true", help="leave the FHIR server running")
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="system",
        help="how the pipeline pulls: system searches, a Group-level Bulk export, or per-patient searches",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )

    from demo.ehr_proxy import RestrictiveEhrProxy
    from demo.generator import GeneratorConfig, generate
    from demo.loader import CLINIC_GROUP_ID, load_to_server, patient_ids_of, put_group

    data_dir = REPO / "data" / "fhir-server"
    shutil.rmtree(data_dir, ignore_errors=True)  # a fresh server each time; the warehouse persists
    server = FhirServer(data_dir=data_dir, port=free_port(args.port))
    t0 = time.monotonic()
    server.start()
    proxy: RestrictiveEhrProxy | None = None
    try:
        log.info("FHIR server at %s", server.base_url)
        data = generate(GeneratorConfig(patients=args.patients, seed=args.seed, mess_rate=args.mess_rate))
        counts = load_to_server(server.base_url, data)
        log.info("loaded synthetic clinic: %s", counts)
        # The clinic's cohort, as an EHR administrator would set it up for the clinic.
        put_group(server.base_url, patient_ids_of(data), CLINIC_GROUP_ID)

        os.environ["FHIR_BASE_URL"] = server.base_url
        # Redirecting the source turns its write-back off unless asked for: here it is the demo's own
        # embedded server, which takes the write-back (sources.yaml enables it for that server).
        os.environ["FHIR_WRITEBACK"] = "on"
        if args.mode != "system":
            proxy = RestrictiveEhrProxy(server.base_url).start()
            os.environ["FHIR_BASE_URL"] = proxy.base_url
            os.environ.update(MODES[args.mode])
            log.info("mode %s: pulling through the restrictive EHR at %s", args.mode, proxy.base_url)
        # The repository's instance settings (run-queue limits, retries, telemetry off), as `make
        # install` prepares them. An operator's own DAGSTER_HOME keeps its instance file if it has one.
        from pipelines.instance import DEFAULT_DAGSTER_HOME, install_instance_config

        home = Path(os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_DAGSTER_HOME)))
        install_instance_config(home, replace_older=home.resolve() == DEFAULT_DAGSTER_HOME.resolve())
        from marts.privacy import KEY_ENV, KEY_FILE_ENV, ensure_demo_key

        if not (os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV)):
            # The demo's pseudonym key: a local 0600 file, created once (production: a managed secret).
            os.environ[KEY_FILE_ENV] = str(ensure_demo_key(REPO / "data" / "pseudonym.key"))
        import dagster as dg

        from pipelines.definitions import defs, settings

        if settings.warehouse_path().exists():
            import duckdb

            from pipelines.writeback import forget_written

            # The server above is new and empty, the warehouse is not: its write-back log describes the
            # previous run's server, so it is forgotten and this run writes everything again.
            with duckdb.connect(str(settings.warehouse_path())) as wcon:
                forget_written(wcon, settings.default_source)

        job = defs.resolve_job_def("clinic_pipeline_job")
        with dg.DagsterInstance.get() as instance:
            result = job.execute_in_process(
                instance=instance, raise_on_error=False, partition_key=settings.default_source
            )
        warehouse = settings.warehouse_path()
        if not result.success:
            log.error("the main job failed; see the Dagster run %s (make dev)", result.run_id)
            if warehouse.exists():  # a blocking data-quality check is the likeliest reason: show them
                sys.stdout.write("\n" + quality_summary(warehouse) + "\n")
            return 1
        sys.stdout.write("\n" + summarize(warehouse) + "\n")
        sys.stdout.write("\n" + quality_summary(warehouse) + "\n")
        import duckdb

        from pipelines.writeback import writeback_summary

        with duckdb.connect(str(warehouse)) as wcon:
            sys.stdout.write("\n" + writeback_summary(wcon, result.run_id) + "\n")
        from marts.publish import publish_dir, restricted_dir
        from marts.report import report_path

        published = publish_dir(warehouse)
        sys.stdout.write(
            f"\nPublished for BI (read-only; docs/bi-connections.md): {published / 'marts.duckdb'} and "
            f"{published / 'parquet'}/<mart>.parquet\nRecord-level marts (restricted, owner only): "
            f"{restricted_dir(warehouse) / 'marts.duckdb'}\nQI report (open in a browser): {report_path()}\n"
        )
        sys.stdout.write(
            f"\nDone in {time.monotonic() - t0:.0f}s. Dagster run {result.run_id}; `make dev` opens the UI.\n"
        )
        return 0
    finally:
        if proxy is not None:
            log.info("the restrictive EHR answered %d requests", proxy.requests)
            proxy.stop()
        if args.keep_server:
            log.info(
                "FHIR server left running at %s (pid %s)",
                server.base_url,
                server.process.pid if server.process else "?",
            )
        else:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
