"""A code location with the raw layer only: `raw_extract_job` on the Celery executor
(`raw_extract_job`) and the same job on the in-process executor (`raw_extract_in_process`).

The distributed tests use it because the raw pulls are the part that fans out to workers and the
part whose single-writer rule (per-source landing files, one merge at a time) is at stake; the
comparison with an in-process run is of the raw tables, row for row. The full code location,
`pipelines.distributed`, puts every job on the same executor (`pipelines/celery_executor.py`).
"""

from __future__ import annotations

import dagster as dg

from assets.raw import raw_assets, source_partitions
from pipelines.automation import RAW_TAGS
from pipelines.celery_executor import EXECUTOR
from pipelines.resources.fhir_source import FhirSourcesResource, WarehouseResource
from pipelines.settings import load_settings

settings = load_settings()
partitions = source_partitions()
# The raw pulls, one step per resource type. The intake ledgers' step (`raw_ledger_assets`) only
# reports counts of rows the pulls wrote; the comparison reads those ledger tables directly.
pulls = raw_assets
SELECTION = dg.AssetSelection.assets(*pulls)

defs = dg.Definitions(
    assets=pulls,
    jobs=[
        dg.define_asset_job(
            "raw_extract_job",
            selection=SELECTION,
            partitions_def=partitions,
            tags=RAW_TAGS,
            executor_def=EXECUTOR,
        ),
        dg.define_asset_job(
            "raw_extract_in_process",
            selection=SELECTION,
            partitions_def=partitions,
            executor_def=dg.in_process_executor,
        ),
    ],
    resources={
        "fhir": FhirSourcesResource.from_settings(settings),
        "warehouse": WarehouseResource.from_settings(settings),
    },
)
