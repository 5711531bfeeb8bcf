"""The Celery executor with a Redis broker, and the workers' Celery app, as this project uses them.

`pipelines/distributed.py` puts every job of the code location on `EXECUTOR`; the workers run
`pipelines/celery_worker.py`, built by `make_celery_app` from the same `CELERY_SETTINGS`, so the
executor and the workers cannot disagree on queues or acknowledgement. Broker and result backend
URLs come from the environment (they may hold a password): `DAGSTER_CELERY_BROKER_URL` and
`DAGSTER_CELERY_BACKEND_URL`. Nothing here imports the assets, so tests can put a smaller code
location on the same executor.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from celery import Celery
from dagster_celery import celery_executor
from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

BROKER_ENV = "DAGSTER_CELERY_BROKER_URL"
BACKEND_ENV = "DAGSTER_CELERY_BACKEND_URL"

# Celery settings shared by the executor (the run process that submits steps) and the workers.
# - prefetch 1: a worker holds no queued step while it runs another, so a free worker takes it;
# - early acknowledgement (Celery's default, stated here because it matters): a worker process killed
#   mid-step makes Celery record the task as failed (WorkerLostError); Dagster then fails the step and
#   the run retry in the instance settings re-executes only the failed steps, on whichever worker is
#   free. Late acknowledgement would redeliver instead, but with Redis only after the visibility
#   timeout, and a long step would then be delivered twice (two writers on one landing file);
# - results expire after a day: Dagster reads each step's result once, as soon as it is ready.
CELERY_SETTINGS: dict[str, Any] = {
    "worker_prefetch_multiplier": 1,
    "task_acks_late": False,
    "result_expires": 86_400,
    "broker_connection_retry_on_startup": True,
}

EXECUTOR = celery_executor.configured(
    {
        "broker": {"env": BROKER_ENV},
        "backend": {"env": BACKEND_ENV},
        "config_source": CELERY_SETTINGS,
    },
    name="celery",
)


def on_celery(job: dg.UnresolvedAssetJobDefinition) -> dg.UnresolvedAssetJobDefinition:
    """The same asset job (name, selection, partitions, tags) with its steps on Celery workers."""
    return dg.define_asset_job(
        job.name,
        selection=job.selection,
        partitions_def=job.partitions_def,
        description=job.description,
        tags=job.tags,
        executor_def=EXECUTOR,
    )


def make_celery_app(environ: dict[str, str] | None = None) -> Celery:
    """The workers' Celery app: the broker and backend from the environment, `CELERY_SETTINGS`, and
    dagster-celery's step task (`execute_plan`) registered."""
    env = os.environ if environ is None else environ
    missing = [v for v in (BROKER_ENV, BACKEND_ENV) if not env.get(v)]
    if missing:
        raise RuntimeError(f"set {' and '.join(missing)} for the Celery workers (docs/deployment.md)")
    app = make_app(
        {
            "broker": env[BROKER_ENV],
            "backend": env[BACKEND_ENV],
            "include": [],
            "config_source": dict_wrapper({**DEFAULT_CONFIG, **CELERY_SETTINGS}),
        }
    )
    create_task(app)
    return app
