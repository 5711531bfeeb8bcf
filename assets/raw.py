"""Raw layer: one asset per FHIR resource type, partitioned by source (site or EHR).

Each materialization pulls one source's resources of one type into that source's own landing file
(`pipelines/landing.py`). That file is never shared, so sources and types can be pulled in
parallel. The new rows are then merged into the warehouse in one short transaction, and that merge
is the only moment a pull needs the warehouse's single writer. Metadata reports fetched = landed +
rejected + duplicates, which is also recorded in `raw.fetch_log`.
"""

from pathlib import Path

import dagster as dg

from pipelines.automation import is_full_refresh
from pipelines.extract import SourceSpec, extract_resource_type, resolve_referenced_questionnaires
from pipelines.landing import landing_path, merge_into_warehouse
from pipelines.resources.fhir_source import FhirSourceConfig, FhirSourcesResource, WarehouseResource
from pipelines.settings import RESOURCE_TYPES, load_settings
from pipelines.warehouse import Warehouse, table_for
from quality_checks.structural import StructuralValidator

# Transient source failures (network, 5xx after the client's own retries) retry the whole step.
RAW_RETRY = dg.RetryPolicy(
    max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def source_partitions() -> dg.StaticPartitionsDefinition:
    """One partition per source configured in sources.yaml (plus environment overrides)."""
    return dg.StaticPartitionsDefinition(sorted(load_settings().sources))


def _spec(source: FhirSourceConfig, landing_root: Path, full: bool) -> SourceSpec:
    return SourceSpec(
        name=source.name,
        kind=source.kind,
        folder=source.folder,
        # A full refresh ignores the watermark: everything the source holds, landed idempotently.
        incremental="full" if full else source.incremental,
        overlap_minutes=source.overlap_minutes,
        landing_dir=source.landing_dir or str(landing_root / "bulk"),
    )


def build_raw_asset(
    resource_type: str, partitions_def: dg.PartitionsDefinition | None = None
) -> dg.AssetsDefinition:
    """The raw asset for one resource type (`raw/<snake_case type>`), partitioned by source."""
    table = table_for(resource_type)
    deps = [dg.AssetKey(["raw", "questionnaire_response"])] if resource_type == "Questionnaire" else []
    extra = (
        " After the pull, Questionnaires that responses reference by canonical (url|version) or "
        "by `Questionnaire/{id}` but that were not updated recently are fetched one by one."
        if resource_type == "Questionnaire"
        else ""
    )

    @dg.asset(
        key=dg.AssetKey(["raw", table]),
        group_name="raw",
        deps=deps,
        partitions_def=partitions_def,
        kinds={"duckdb", "fhir"},
        owners=["team:data-engineering"],
        tags={"layer": "raw"},
        retry_policy=RAW_RETRY,
        description=(
            f"One row per {resource_type} version fetched from each FHIR source (partition = source), "
            f"kept as received (table raw.{table}); invalid resources go to raw.rejected with their "
            f"reason and every validation finding to raw.findings.{extra}"
        ),
    )
    def _raw_asset(
        context: dg.AssetExecutionContext, fhir: FhirSourcesResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        source = fhir.source(context.partition_key if context.has_partition_key else None)
        root = warehouse.landing_root()
        spec = _spec(source, root, is_full_refresh(context))
        client = source.build_client() if source.kind in ("rest", "bulk") else None
        validator = StructuralValidator(mode=warehouse.validation)
        land_file = landing_path(root, source.name, resource_type)
        # 1. Pull into this source's own landing file (no warehouse lock held while on the network).
        with Warehouse(land_file).connect() as lcon:
            result = extract_resource_type(lcon, spec, client, resource_type, context.run_id, validator)
            metadata = result.metadata()
            if resource_type == "Questionnaire":
                responses = landing_path(root, source.name, "QuestionnaireResponse")
                resolution = resolve_referenced_questionnaires(
                    lcon, spec, client, context.run_id, validator, responses_file=responses
                )
                metadata.update({f"canonicals_{k}": v for k, v in resolution.items()})
        metadata.update({f"validation_{k}": v for k, v in validator.stats.as_dict().items()})
        # 2. Merge what the warehouse lacks (waits while another writer holds the warehouse).
        with warehouse.connect() as con:
            merged = merge_into_warehouse(con, land_file, resource_type)
            total = con.execute(
                f"SELECT count(*) FROM raw.{table} WHERE source = ?",  # noqa: S608 - constant table name
                [source.name],
            ).fetchall()[0][0]
        context.log.info(
            f"{source.name}/{resource_type}: fetched {metadata['fetched']} = landed {metadata['landed']} + "
            f"rejected {metadata['rejected']} + duplicates {metadata['duplicates']} "
            f"({metadata['rate_per_s']}/s); merged {merged.get(table, 0)} new rows into the warehouse"
        )
        metadata["merged_rows"] = int(merged.get(table, 0))
        metadata["merge_seconds"] = float(merged.get("merge_seconds", 0.0))
        metadata["table_rows"] = total
        metadata["dagster/row_count"] = total
        return dg.MaterializeResult(metadata=metadata)

    return _raw_asset


def build_raw_assets(partitions_def: dg.PartitionsDefinition | None) -> list[dg.AssetsDefinition]:
    """One raw asset per resource type."""
    return [build_raw_asset(t, partitions_def) for t in RESOURCE_TYPES]


raw_assets: list[dg.AssetsDefinition] = build_raw_assets(source_partitions())
