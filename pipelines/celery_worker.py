"""The Celery app the workers run: `celery -A pipelines.celery_worker worker -Q dagster -c 1`.

A module of its own because it needs the broker URL at import time (from the environment, see
`pipelines.celery_executor.make_celery_app`), which the daemon and the webserver never set.
"""

from __future__ import annotations

from pipelines.celery_executor import make_celery_app

app = make_celery_app()
