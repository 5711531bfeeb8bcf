"""The Dagster code location: merges assets, checks, resources, jobs, schedules and sensors.

`dagster dev -m pipelines.definitions` (or `make dev`).
"""

from __future__ import annotations

import dagster as dg

from assets.checks import build_quality_checks
from assets.marts import mart_assets
from assets.publish import publish_assets
from assets.raw import raw_assets, raw_ledger_assets, source_partitions
from assets.staging import staging_assets
from assets.writeback import writeback_assets
from pipelines.automation import (
    build_jobs,
    build_new_data_sensor,
    build_nightly_schedule,
    build_raw_freshness_checks,
)
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource
from pipelines.settings import load_settings

settings = load_settings()
partitions = source_partitions()
jobs = build_jobs(partitions)

raw_job = jobs["raw_extract_job"]  # multiprocess (see pipelines/automation.py); the rest in-process
freshness_checks, freshness_sensor = build_raw_freshness_checks(raw_assets)
all_assets = [*raw_assets, *raw_ledger_assets, *staging_assets, *mart_assets]

defs = dg.Definitions(
    assets=[*all_assets, *publish_assets, *writeback_assets],
    # Great Expectations suites per layer (ERROR blocks downstream assets, WARN annotates), plus
    # Dagster's freshness checks on the raw assets.
    asset_checks=[*build_quality_checks(all_assets), *freshness_checks],
    jobs=[raw_job, jobs["full_refresh_job"], jobs["downstream_job"], jobs["clinic_pipeline_job"]],
    schedules=[build_nightly_schedule(raw_job, partitions)],
    sensors=[
        build_new_data_sensor([a.key for a in raw_assets], jobs["downstream_job"]),
        freshness_sensor,
    ],
    resources={
        "fhir": FhirSourcesResource.from_settings(settings),
        "warehouse": WarehouseResource.from_settings(settings),
    },
    executor=dg.in_process_executor,
)
