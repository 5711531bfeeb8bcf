"""The Dagster code location: merges assets, resources and jobs. `dagster dev -m pipelines.definitions`."""

from __future__ import annotations

import dagster as dg

from assets.raw import raw_assets
from assets.scores import scoring_assets
from assets.staging import staging_assets
from pipelines.resources.fhir_source import FhirSourceResource, WarehouseResource
from pipelines.settings import load_settings

settings = load_settings()

# DuckDB allows one writer: every job that writes the warehouse runs its steps in one process and
# carries the `warehouse: write` tag that dagster.yaml limits to one run at a time.
WAREHOUSE_WRITE_TAGS = {"warehouse": "write"}

raw_job = dg.define_asset_job(
    "raw_extract_job",
    selection=dg.AssetSelection.groups("raw"),
    description="Pull every FHIR resource type the marts need into the raw layer.",
    tags=WAREHOUSE_WRITE_TAGS,
)

main_job = dg.define_asset_job(
    "clinic_pipeline_job",
    selection=dg.AssetSelection.all(),
    description="The main job: FHIR source to warehouse, every layer (what `make demo` runs).",
    tags=WAREHOUSE_WRITE_TAGS,
)

defs = dg.Definitions(
    assets=[*raw_assets, *staging_assets, *scoring_assets],
    jobs=[raw_job, main_job],
    resources={
        "fhir": FhirSourceResource.from_settings(settings.source()),
        "warehouse": WarehouseResource.from_settings(settings),
    },
    executor=dg.in_process_executor,
)
