"""`deploy/dagster.postgres.yaml` (the instance beyond one machine) keeps the local instance's rules.

The queue limits are what keep DuckDB's single writer safe and the run retries are what recover a
step whose worker was killed (tests/integration/test_distributed.py); the Postgres file must not drift
from `dagster.yaml` on either. Secrets are read from the environment, never written in the file.
"""

from __future__ import annotations

import yaml

from pipelines.instance import REPO_DAGSTER_YAML, REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "dagster.postgres.yaml"


def _load(path):
    return yaml.safe_load(path.read_text())


def test_postgres_instance_has_the_local_queue_limits_and_retries():
    local, deploy = _load(REPO_DAGSTER_YAML), _load(DEPLOY)
    coordinator = deploy["run_coordinator"]
    assert coordinator["class"] == "QueuedRunCoordinator"
    assert coordinator["config"]["tag_concurrency_limits"] == local["run_queue"]["tag_concurrency_limits"]
    assert coordinator["config"]["max_concurrent_runs"] == local["run_queue"]["max_concurrent_runs"]
    assert deploy["run_retries"] == local["run_retries"]
    assert deploy["telemetry"] == {"enabled": False}


def test_postgres_url_comes_from_the_environment_and_names_psycopg2():
    deploy = _load(DEPLOY)
    assert deploy["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    text = DEPLOY.read_text()
    assert "postgresql+psycopg2://" in text  # documented form; a bare postgresql:// picks psycopg 3
    assert "password:" not in text.replace("PASSWORD@", "")


def test_the_distributed_code_location_puts_every_job_on_celery():
    from pipelines.celery_executor import CELERY_SETTINGS, EXECUTOR, make_celery_app

    assert EXECUTOR.name == "celery"
    assert CELERY_SETTINGS["worker_prefetch_multiplier"] == 1
    assert CELERY_SETTINGS["task_acks_late"] is False  # see the comment beside CELERY_SETTINGS
    app = make_celery_app(
        {
            "DAGSTER_CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
            "DAGSTER_CELERY_BACKEND_URL": "redis://127.0.0.1:1/1",
        }
    )
    assert "execute_plan" in app.tasks
    assert app.conf.worker_prefetch_multiplier == 1
    assert [q.name for q in app.conf.task_queues] == ["dagster"]


def test_workers_refuse_to_start_without_broker_settings():
    import pytest

    from pipelines.celery_executor import make_celery_app

    with pytest.raises(RuntimeError, match="DAGSTER_CELERY_BROKER_URL and DAGSTER_CELERY_BACKEND_URL"):
        make_celery_app({})
