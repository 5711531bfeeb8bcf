"""The code location for a deployment beyond one machine: every job on the Celery executor.

`pipelines.definitions` is the local code location (in-process and multiprocess executors, SQLite
instance). This module serves the same assets, checks, resources, schedule and sensors, but every job
sends its steps to Celery workers through a Redis broker (`pipelines/celery_executor.py`), so raw
pulls of several sources fan out to workers on other hosts. Its Dagster instance keeps runs and events
in Postgres (`deploy/dagster.postgres.yaml`); docs/deployment.md describes the layout.

The warehouse's single writer still holds on Celery: a raw step pulls into its own per-source landing
file and takes the warehouse only for a short merge, and every other step waits for the warehouse
lock (`WarehouseResource.lock_timeout_s`) rather than writing beside another process.

    dagster-daemon run -m pipelines.distributed
    celery -A pipelines.celery_worker worker -Q dagster -c 1 -n worker1@%h
"""

from __future__ import annotations

import dagster as dg

from pipelines import definitions as local
from pipelines.automation import build_new_data_sensor, build_nightly_schedule
from pipelines.celery_executor import EXECUTOR, on_celery

jobs = {name: on_celery(job) for name, job in local.jobs.items()}

defs = dg.Definitions(
    assets=local.defs.assets,
    asset_checks=local.defs.asset_checks,
    jobs=list(jobs.values()),
    schedules=[build_nightly_schedule(jobs["raw_extract_job"], local.partitions)],
    sensors=[
        build_new_data_sensor([a.key for a in local.raw_assets], jobs["downstream_job"]),
        local.freshness_sensor,
    ],
    resources=local.defs.resources,
    executor=EXECUTOR,
)
