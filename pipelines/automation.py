"""Jobs, the nightly schedule, the new-data sensor and raw freshness checks.

- `raw_extract_job`: incremental pull of one source (a partition) into its landing files, then
  merged into the warehouse. Runs of different sources may run at the same time.
- `full_refresh_job`: the same pull without watermarks (everything the source holds), landing
  idempotently, then every derived layer rebuilt regardless of the build state.
- `downstream_job`: every layer after raw (staging, scoring, quality checks, marts, publishing,
  report), one run at a time (tag `warehouse: write`).
- `clinic_pipeline_job`: everything for one source in one run (what `make demo` runs).
- `nightly_extract_schedule`: one incremental run per source, every night.
- `new_data_sensor`: starts `downstream_job` when a raw materialization landed new versions.
- Freshness checks on every raw asset: WARN when a type has not been pulled for a day and more.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta

import dagster as dg

# Run tags. dagster.yaml limits `warehouse: write` to one run at a time (the downstream layers hold
# the warehouse for a while); raw runs only take the warehouse lock for their short merges, so they
# carry `warehouse: merge` instead and may run in parallel (one per source, see dagster.yaml).
WAREHOUSE_WRITE_TAGS = {"warehouse": "write"}
RAW_TAGS = {"warehouse": "merge"}
# Read by the raw and derived assets: a full refresh ignores watermarks and build state.
REFRESH_TAG = "alliance_qi/refresh"
NIGHTLY_CRON = "0 2 * * *"
RAW_FRESHNESS = timedelta(hours=26)


def is_full_refresh(context: dg.AssetExecutionContext) -> bool:
    """True in runs of `full_refresh_job` (or any run tagged alliance_qi/refresh=full)."""
    return context.run.tags.get(REFRESH_TAG) == "full"


def build_jobs(partitions: dg.PartitionsDefinition) -> dict[str, dg.UnresolvedAssetJobDefinition]:
    """The four jobs, by name."""
    raw = dg.AssetSelection.groups("raw")
    return {
        "raw_extract_job": dg.define_asset_job(
            "raw_extract_job",
            selection=raw,
            partitions_def=partitions,
            description="Incremental pull of one source (partition) into the raw layer.",
            tags=RAW_TAGS,
            # Steps in parallel processes: each pull writes its own landing file and takes the
            # warehouse only for a short merge (pipelines/landing.py).
            executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}),
        ),
        "full_refresh_job": dg.define_asset_job(
            "full_refresh_job",
            selection=dg.AssetSelection.all(),
            partitions_def=partitions,
            description=(
                "Pull everything one source holds (no watermark), land it idempotently and rebuild every "
                "derived layer from scratch."
            ),
            tags={**WAREHOUSE_WRITE_TAGS, REFRESH_TAG: "full"},
        ),
        "downstream_job": dg.define_asset_job(
            "downstream_job",
            selection=dg.AssetSelection.all() - raw,
            description="Every layer after raw: staging, scores, quality checks, marts, publishing, report.",
            tags=WAREHOUSE_WRITE_TAGS,
        ),
        "clinic_pipeline_job": dg.define_asset_job(
            "clinic_pipeline_job",
            selection=dg.AssetSelection.all(),
            partitions_def=partitions,
            description="The main job: one source to published marts and QI report (what `make demo` runs).",
            tags=WAREHOUSE_WRITE_TAGS,
        ),
    }


def build_nightly_schedule(
    job: dg.UnresolvedAssetJobDefinition, partitions: dg.StaticPartitionsDefinition, timezone: str = "UTC"
) -> dg.ScheduleDefinition:
    """One incremental raw run per source every night; the sensor takes it from there."""

    @dg.schedule(
        cron_schedule=NIGHTLY_CRON,
        job=job,
        execution_timezone=timezone,
        name="nightly_extract_schedule",
        description="Every night at 02:00: one incremental pull per configured source (in parallel).",
    )
    def _nightly(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
        for source in partitions.get_partition_keys():
            yield dg.RunRequest(run_key=f"nightly-{stamp}-{source}", partition_key=source)

    return _nightly


def build_new_data_sensor(
    raw_keys: Sequence[dg.AssetKey], downstream: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    """Start the downstream layers when any raw materialization landed new versions.

    The cursor is the newest event storage id seen per raw asset, so each landing is considered
    once. A pull that brought nothing new (metadata `new_versions` = 0) starts nothing.
    """

    @dg.sensor(
        name="new_data_sensor",
        job=downstream,
        minimum_interval_seconds=60,
        description="Runs downstream_job when a raw pull landed new resource versions.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest | dg.SkipReason]:
        cursor: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        new_versions = 0
        newest = dict(cursor)
        for key in raw_keys:
            name = key.to_user_string()
            result = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor.get(name)),
                limit=1000,
                ascending=True,
            )
            for record in result.records:
                newest[name] = max(newest.get(name, 0), record.storage_id)
                mat = record.asset_materialization
                value = mat.metadata.get("new_versions") if mat else None
                raw = value.value if isinstance(value, dg.MetadataValue) else value
                new_versions += int(raw) if isinstance(raw, int | float) else 0
        context.update_cursor(json.dumps(newest, sort_keys=True))
        if new_versions == 0:
            yield dg.SkipReason("no raw pull landed new versions since the last evaluation")
            return
        mark = max(newest.values())
        yield dg.RunRequest(run_key=f"new-data-{mark}", tags={"alliance_qi/new_versions": str(new_versions)})

    return _sensor


def build_raw_freshness_checks(
    raw_assets: Sequence[dg.AssetsDefinition],
) -> tuple[Sequence[dg.AssetChecksDefinition], dg.SensorDefinition]:
    """WARN when a raw asset has not been updated within RAW_FRESHNESS (a missed nightly run).

    Dagster marks these builders superseded by the preview FreshnessPolicy API. They remain
    supported, show as asset checks in the UI, and need no preview flag in dagster.yaml.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = dg.build_last_update_freshness_checks(
            assets=list(raw_assets), lower_bound_delta=RAW_FRESHNESS, severity=dg.AssetCheckSeverity.WARN
        )
        sensor = dg.build_sensor_for_freshness_checks(freshness_checks=checks, name="raw_freshness_sensor")
    return checks, sensor
